"""A run's headline numbers: intact accuracy, most damaging lesions, largest class gain."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lesion.store import Run


@dataclass(frozen=True)
class RunSummary:
    """Headline numbers of a run; ``text`` is what the CLI prints.

    ``drops``: one row per lesion with its overall top-1 drop in percentage points (positive =
    damage), largest first. ``gain``: the lesion and class with the largest class-specific
    top-1 increase (pp), or None when no lesion improves any class.
    """

    intact: pd.Series
    drops: pd.DataFrame
    gain: tuple[str, str, float] | None
    text: str


def run_summary(run: Run, top: int = 5, plan: str | None = None) -> RunSummary:
    """Summarise ``run`` (optionally one plan of it)."""
    table = run.table("top1")
    intact = table.loc["intact"]
    lesions = table.drop(index="intact")
    if plan is not None:
        lesions = lesions.loc[[k for k in run.lesions(plan)["key"] if k in lesions.index]]
    change = (lesions - intact) * 100
    drops = pd.DataFrame({"lesion": change.index, "drop_pp": -change["all"].to_numpy()}).sort_values(
        "drop_pp", ascending=False, kind="stable"
    )
    per_class = change.drop(columns="all")
    gain = None
    if len(per_class) and per_class.to_numpy().max() > 0:
        stacked = per_class.stack()
        key, cls = stacked.idxmax()
        gain = (str(key), str(cls), float(stacked.max()))
    lines = [f"Intact network: top-1 {100 * intact['all']:.2f} % on {len(run.labels)} samples"]
    lines.append("  per class: " + ", ".join(f"{c} {100 * v:.1f} %" for c, v in intact.drop("all").items()))
    if len(drops):
        lines.append(f"Largest overall top-1 drops ({len(drops)} lesions):")
        for _, row in drops.head(top).iterrows():
            worst = per_class.loc[row["lesion"]].nsmallest(2)
            hit = ", ".join(f"{c} {v:+.1f} pp" for c, v in worst.items())
            lines.append(f"  {row['lesion']:<24} -{row['drop_pp']:.2f} pp   (most hit: {hit})")
    lines.append(
        f"Largest class-specific gain: {gain[0]} on class {gain[1]}: +{gain[2]:.2f} pp" if gain else "No lesion improved any class."
    )
    check = run.float32_check()
    if check is not None:
        lines.append(_precision_line(run.config["autocast"], check))
    return RunSummary(intact, drops.reset_index(drop=True), gain, "\n".join(lines))


def _precision_line(autocast: str, check: pd.DataFrame) -> str:
    """How many top-1 predictions of an autocast run differ from float32's, on the re-checked lesions."""
    head = f"Precision: {autocast} autocast; top-1 predictions that differ from float32 (re-evaluated): "
    if check.empty:
        return head + "none re-evaluated yet."
    lesions = check[check["lesion"] != "intact"]
    parts = [f"intact {row.differ:,} of {row.n:,}" for row in check[check["lesion"] == "intact"].itertuples()]
    if len(lesions):
        worst = lesions.loc[lesions["differ"].idxmax()]
        total, n = int(lesions["differ"].sum()), int(lesions["n"].sum())
        parts.append(
            f"{len(lesions)} sampled lesion{'s' * (len(lesions) > 1)} {total:,} of {n:,} ({100 * total / n:.3f} %), "
            f"at most {worst['differ']:,} in one ({worst['lesion']})"
        )
    return head + "; ".join(parts) + "."
