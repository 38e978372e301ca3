"""The evaluation harness (``atomthink eval``): data readers, answer matching, the runner, reports, capabilities."""
