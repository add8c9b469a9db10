"""Crystal stage: fetch structures (builtin AFLOW examples, Materials Project, or a CIF folder),
label each with an AFLOW prototype (or a new cluster), and select a √-weighted subset.

Modules: :mod:`.sources` (rule ``structures``), :mod:`.materials_project` (mp-api client with cache and
retries), :mod:`.prototypes` (rule ``prototypes``), :mod:`.selection` (checkpoint ``select``).
"""
