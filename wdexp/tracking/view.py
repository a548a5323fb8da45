"""What MLflow's UI opens on: the experiment's description and kind, a saved view that shows
each pair's result as table columns, and the link that opens both.

MLflow 3.17's UI picks its mode from the link (``workflowType=machine_learning``) or from the
user's last choice in the browser, and starts in its GenAI mode (a traces overview) otherwise;
the ``mlflow.experimentKind`` tag is what older and newer UIs read instead. The saved view is the
UI's own "Views → Save as new view" record (an experiment tag ``mlflow.sharedViewState.<id>``
holding the runs table's state), so it appears in the experiment's *Views* menu beside the
user's own views and opens by link.
"""

from __future__ import annotations

import base64
import json
import zlib

VIEW_ID = "wdexp-comparison"
VIEW_NAME = "paired comparison (wdexp)"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
# A pair row shows both arms' final values; an arm row (expand the pair) its own last loss.
VIEW_COLUMNS = (
    "params.`optimizer.weight_decay`",
    "metrics.`baseline.final_loss`",
    "metrics.`decay.final_loss`",
    "metrics.`baseline.final_weight_norm`",
    "metrics.`decay.final_weight_norm`",
    "metrics.`loss`",
    "attributes.`Source`",
)
DESCRIPTION = ("Paired weight-decay runs from wdexp: each pair run holds a baseline arm (weight "
               "decay 0) and a decay arm trained from one init. Views → "
               f"\"{VIEW_NAME}\" shows each pair's final values as columns.")


def _view_state() -> str:
    """The runs table's state as the UI stores a saved view: JSON, zlib-compressed, base64."""
    state = {
        "searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
        "modelVersionFilter": "All Runs", "selectedColumns": list(VIEW_COLUMNS),
        "columnOrder": [], "columnWidths": {},
    }
    packed = zlib.compress(json.dumps(state, separators=(",", ":")).encode())
    return "deflate;" + base64.b64encode(packed).decode()


def experiment_tags(created_ms: int) -> dict[str, str]:
    """The tags every experiment wdexp writes into carries."""
    view = {"name": VIEW_NAME, "createdAt": created_ms, "updatedAt": created_ms,
            "state": _view_state()}
    return {"mlflow.experimentKind": "custom_model_development",
            "mlflow.note.content": DESCRIPTION,
            VIEW_TAG: json.dumps(view)}


def link(base_url: str, experiment_id: str | None = None) -> str:
    """The UI's page for the experiment's runs in the saved view (or the experiment list)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return (f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}"
            "&workflowType=machine_learning")
