"""Run several pruning methods at equal whole-model parameter budgets and put them side by side.

Each (method, ratio) cell is an ordinary pruning run (:func:`p3b_hf.runner.prune`, what ``p3b-hf prune``
runs) into its own sub-directory, with the same data, seed and training budget (``--epochs`` epochs of training per method: P3B prunes
during them, VBP uses them for its KD fine-tune, global pruning for its fine-tune). A method that
cannot reach a budget (VBP beyond ~62-66 % param reduction) gets an "unreachable" row, not a crash; a
method that is not defined for the model's family (P3B on Swin / ConvNeXt) an "unsupported" row.

What a cell starts from: P3B prunes *while* it fine-tunes, so it starts from the source model (with a
fresh head for the target labels). VBP is a *post-training* method: it prunes a model already trained on
the task and distils from it, so it starts from the dense cell (``OUT/dense``: the source model
fine-tuned like ``p3b-hf finetune --new-head`` for ``--epochs``, trained once and reused) and uses that
model as its KD teacher. Global pruning starts from the source model by default (its fine-tune trains the
new head) or from the dense cell with ``--global-from dense``. Every row says what it started from
(``start``) and how many epochs of training it had in all (``epochs_total``: its own plus the dense
cell's when it started from it). The dense cell is trained when ``--dense-baseline`` is given or when a
method starts from it, and its row is shown whenever it was trained.
Results: ``compare.json``, ``compare.csv``, ``compare.md`` and ``accuracy_vs_params.png``.

Domains (docs/data.md "Domains"): with several eval sets (``--test-domains``, ``--eval-split a,b``) every row
carries the accuracy on each (one table column and one plot panel per set), the source-vs-target gap and
its change against the dense row. ``--protocol lodo`` runs the whole compare once per held-out domain
(``OUT/<domain>/``, dense cell included; finished cells are reused on re-runs) and averages over the
domains as the DG papers' tables do: one column per held-out domain, their mean, the mean gap.
``--budget channels`` gives global-* cells Torch-Pruning channel ratios (arXiv 2504.04196's 50/75/95 %)
instead of whole-model parameter fractions.

The modules, in the order a compare uses them: :mod:`.options` (:class:`CompareOptions`, :class:`CompareJob`,
the options a compare sets itself), :mod:`.specs` (the ``--methods`` entries: :class:`MethodSpec`),
:mod:`.cells` (the cell plan: which method x budget cells, from which model, into which directory, and each
cell's ``PruneJob``), :mod:`.reuse` (finished cells: what they were made from, the refusal to reuse another
experiment's), :mod:`.run` (:func:`run_compare`), :mod:`.single` (one compare on the data as given),
:mod:`.dense` (the dense cell), :mod:`.prune_cell` (one cell's prune run, a refusal becoming a row),
:mod:`.speed` (the speed columns), :mod:`.rows` (a cell's row), :mod:`.lodo` (``--protocol lodo``), and the
outputs: :mod:`.outputs` (``compare.json`` / ``.csv``), :mod:`.tables` (``compare.md``), :mod:`.plot`
(``accuracy_vs_params.png``). The names below are the package's API (``from p3b_hf.compare import ...``).
"""

from __future__ import annotations

from .cells import _cells as _cells  # the cell plan, unexported (tests/test_architecture.py calls it)
from .cells import cell_job, latency_targets, parse_ratios
from .dense import dense_row
from .lodo import fold_dir_name, fold_job, lodo_folds, lodo_rows, relative, run_lodo
from .options import (
    BUDGET_TEXT,
    BUDGETS,
    GLOBAL_CRITERIA,
    PROTOCOLS,
    START_DENSE,
    START_SOURCE,
    CompareJob,
    CompareOptions,
    check_given,
    compare_sets,
)
from .outputs import CSV_FIELDS, GAP_FIELDS, write_lodo_outputs, write_outputs
from .plot import plot_accuracy_vs_params
from .prune_cell import run_cell
from .reuse import check_reusable, own_epochs, start_label, started_from
from .rows import NOT_OK, add_gap_change, eval_set_fields, eval_set_names, row_of
from .run import run_compare
from .single import check_source, run_single
from .specs import MethodSpec, compare_labels, parse_methods
from .speed import deploy_ratio, throughput_ratio
from .tables import lodo_table, markdown_table

__all__ = [
    "BUDGETS",
    "BUDGET_TEXT",
    "CSV_FIELDS",
    "CompareJob",
    "CompareOptions",
    "GAP_FIELDS",
    "GLOBAL_CRITERIA",
    "MethodSpec",
    "NOT_OK",
    "PROTOCOLS",
    "START_DENSE",
    "START_SOURCE",
    "add_gap_change",
    "cell_job",
    "check_given",
    "check_reusable",
    "check_source",
    "compare_labels",
    "compare_sets",
    "dense_row",
    "deploy_ratio",
    "eval_set_fields",
    "eval_set_names",
    "fold_dir_name",
    "fold_job",
    "latency_targets",
    "lodo_folds",
    "lodo_rows",
    "lodo_table",
    "markdown_table",
    "own_epochs",
    "parse_methods",
    "parse_ratios",
    "plot_accuracy_vs_params",
    "relative",
    "row_of",
    "run_cell",
    "run_compare",
    "run_lodo",
    "run_single",
    "start_label",
    "started_from",
    "throughput_ratio",
    "write_lodo_outputs",
    "write_outputs",
]
