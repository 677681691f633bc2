"""The GPU check script runs without Ray (the GPU machines have none): here on CPU, as its dry run,
with Ray and OmegaConf made unimportable; the engine ends with the learner's gathered weights."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = """
import importlib.abc, sys
class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('ray', 'omegaconf'):
            raise ImportError('not on the GPU machines: ' + name)
sys.meta_path.insert(0, NoRay())
from pipelines.gpu_check import main
sys.exit(main(sys.argv[1:]))
"""


def test_gpu_check_runs_without_ray(tmp_path):
    out = subprocess.run([sys.executable, "-c", BLOCK, "--device", "cpu", "--model", "HuggingFaceTB__SmolLM2-135M", "--layers", "1",
                          "--samples", "2", "--tokens", "32", "--steps", "2", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["engine_weights_match"] and result["generated_tokens"] > 0
    assert len(result["steps"]) == 2 and all(r["sync_s"] > 0 for r in result["steps"])
    assert "engine weights match: True" in out.stdout
