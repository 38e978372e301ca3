"""AtomThink Serve: slow-thinking multimodal math over atomic steps and a process reward model."""

__version__ = "0.1.0"
