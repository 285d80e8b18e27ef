"""Compute stages of Network Dissection (the README's layout table lists every module).

Data (``broden``, ``label_decoding``, ``synthetic/``), the network side (``models/``,
``preprocess``, ``extract_config``, ``extract_run``, ``extract``), counting
(``quantiles``, ``upsample``, ``tally``, ``replay``, ``distributed``), results
(``scoring``, ``sweep``, ``null_model``), the stages that run them (``layer_stages`` for one
layer, ``stages`` for a run), ``experiments/``, ``reports/``, the command lines
(``commandline/``: the ``netdissect`` command, one module per subcommand, which
``scripts/`` and ``python -m pipeline`` run) and what they share (``cli``, ``commands``,
``files``). Storage is ``cache/``, which imports nothing from here.
"""
