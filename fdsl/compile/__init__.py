"""The compiler back end: planner, LLVM code generation, BPF objects, metadata, explain."""
