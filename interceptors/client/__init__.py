"""The client side: per target, a channel pool under one ordered stack of layers
(stack.py assembles them; call.py is the seam they share), one file per concern."""
