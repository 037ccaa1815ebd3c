"""The content service: posts, comments and likes, with their counters."""
