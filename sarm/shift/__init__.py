"""Preference shift: find the features behind a preference, change them, measure the shift.

Three steps, all on cached pooled latents (the backbone never runs again):

1. :func:`discover_features` ranks features by how they separate a *target* set
   of responses from a *complement* set;
2. :mod:`sarm.interventions` describes the change (weight edits, latent steering);
3. :func:`evaluate_shift` measures how rewards and pairwise accuracy move on each
   set, and the selectivity ratio ``mean |delta r| on target / on complement``.

:func:`workflows.shift.prepare_shift` ties them to a feature store or data files
through a small set-spec grammar (see ``docs/preference_shift.md``)::

    shift = prepare_shift("subset:refusal", "rest", store=store)
    table = shift.discover(limit=10)
    report = shift.evaluate(parse_actions(["scale:0"], table.feature_id[:5]))

Modules: :mod:`~sarm.shift.specs` (set specs, :func:`select_rows`),
:mod:`~sarm.shift.data` (:class:`ShiftData`), :mod:`~sarm.shift.discovery`,
:mod:`~sarm.shift.report` (:class:`ShiftReport`, :func:`evaluate_shift`);
:mod:`~sarm.shift.rows` holds the row checks they share.
"""

from sarm.shift.data import EXAMPLE_COLUMNS as EXAMPLE_COLUMNS
from sarm.shift.data import STORE_SOURCE as STORE_SOURCE
from sarm.shift.data import ShiftData
from sarm.shift.discovery import DIRECTIONS, ORDERS, discover_features, feature_contrast
from sarm.shift.discovery import Direction as Direction
from sarm.shift.discovery import Labels as Labels
from sarm.shift.report import ZERO_CHANGE as ZERO_CHANGE
from sarm.shift.report import SetShift, ShiftReport, evaluate_shift
from sarm.shift.rows import as_rows as as_rows
from sarm.shift.specs import SetSpec, select_rows

__all__ = [
    "DIRECTIONS",
    "ORDERS",
    "SetShift",
    "SetSpec",
    "ShiftData",
    "ShiftReport",
    "discover_features",
    "evaluate_shift",
    "feature_contrast",
    "select_rows",
]
