"""`python -m skill ...` (and `torchrun ... -m skill extract ...`): the `skill` command."""

from skill.cli import app

app(prog_name="skill")
