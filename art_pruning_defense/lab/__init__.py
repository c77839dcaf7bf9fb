"""
The lab app, built on the library: the ``art-prune`` command line (:mod:`~art_pruning_defense.lab.cli`), the lab
workflow on files (:mod:`~art_pruning_defense.lab.workflow`), the digits BadNet demo
(:mod:`~art_pruning_defense.lab.digits`, :mod:`~art_pruning_defense.lab.demo`), the lab's data files
(:mod:`~art_pruning_defense.lab.data`) and the tables and plots it writes (:mod:`~art_pruning_defense.lab.output`).

The library never imports this package; it imports the library. :func:`quiet` keeps a script as quiet as the CLI.
"""

from art_pruning_defense.lab._quiet import quiet

__all__ = ["quiet"]
