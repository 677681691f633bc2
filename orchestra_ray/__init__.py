"""orchestra-ray: GRPO training of tool-orchestrating language models on Ray.

The library layer: pure logic with no dependency on Ray actors or drivers.
"""

__version__ = "0.1.0"
