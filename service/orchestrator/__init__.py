"""The search orchestrator: strategies over a step expander, independent of queues and models."""
