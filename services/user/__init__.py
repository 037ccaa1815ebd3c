"""The user service: accounts, profiles, the follow graph, preferences and sign-in."""
