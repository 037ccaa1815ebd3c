"""The server side: what a layer sees of a call (call.py), the chain that runs one layer
per concern around every served call (chain.py), the server that puts it in front of the
servicers' handlers (chained_server.py), and the layers, one file each."""
