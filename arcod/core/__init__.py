"""The pure core: every decision arcod makes, with no I/O and no event loop.

Modules here take plain values and msgspec structs and return the same. The actors, the
store, the control server and the CLI are thin layers that feed this core and persist what
it decides (the h11 model: a state machine that knows nothing of sockets).
"""
