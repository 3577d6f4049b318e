"""The layering of DESIGN.md, as import-linter's contract in `.importlinter`:
no module imports a higher layer, and siblings (data | models, ...) are
independent."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_module_imports_a_higher_layer():
  lint = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  result = subprocess.run([lint, '--config', os.path.join(REPO, '.importlinter'),
                           '--no-cache'], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'Contracts: 1 kept, 0 broken.' in result.stdout
