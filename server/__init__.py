"""Speech-annotated Atari demonstrations: server, recorder and researcher tools."""

__version__ = "0.1.0"
