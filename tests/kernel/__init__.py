"""Real-kernel tests: livepatch modules built, converted and loaded in a booted Linux VM."""
