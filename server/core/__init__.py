"""The framework-free core: emulator, actions, codec, recording format, writer, replay.

Nothing under this package imports Flask or Socket.IO, so a training pipeline can use it without a web stack.
"""
