"""The real-kernel harness: build test modules, boot a kernel under qemu, compare verdicts."""
