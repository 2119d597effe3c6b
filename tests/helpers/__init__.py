"""What the tests share: tiny random models of every family (models.py), tokenizers that need no
data folder (tokenizers.py), a method added the way a contributor adds one (toy_random_method.py).
Imported absolutely (`from tests.helpers.models import tiny_model`): pytest puts the repository
root on sys.path because tests/ is a package."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the repository
