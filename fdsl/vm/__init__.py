"""The BPF machine: ISA, loader, maps, helpers, context, verifier, interpreter, JIT."""
