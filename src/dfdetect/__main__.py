"""``python -m dfdetect`` (also what ``torchrun -m dfdetect`` runs)."""

from dfdetect.cli import main

main()
