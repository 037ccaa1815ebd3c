"""The server side: the chain (chain.py) that runs one layer per concern around every
served call, the server that puts it in front of the servicers' handlers
(chained_server.py), and the layers, one file each."""
