"""Real servers for tests, tools and benchmarks (not part of the product): processes started on free ports,
polled until ready and stopped with their whole tree, and a CPU stand-in for ``vllm serve``."""
