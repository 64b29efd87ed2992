"""The policy language: grammar loading, parser, AST, diagnostics, checker passes."""
