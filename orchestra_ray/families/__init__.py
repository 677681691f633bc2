"""Task families (FRAMES questions, function-calling domains, arithmetic): tasks, data, judges and
warm-start demonstrations."""
