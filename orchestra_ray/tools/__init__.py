"""Tool back-ends: tool schemas and argument checks, the sandboxed code interpreter, search."""
