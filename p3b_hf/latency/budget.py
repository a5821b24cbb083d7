"""What a method receives for a latency budget: the calibrated model, the dense architecture, and the target.

``target_ms`` is the latency the pruned model may take per batch *in the latency model's milliseconds*: the
model's own prediction for the dense model divided by the speed-up, so that what the anchors get wrong for
every architecture alike (a whole-model scale) cancels in the ratio. ``--target-speedup X`` asks for X;
``--target-latency-ms T`` for the measured dense time / T. The methods spend it (docs/latency.md); methods that
fix the architecture before training close the loop on the ``meter`` (the deployed artefact measured against
the dense one), and the run measures what they achieved (:mod:`.verify`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import BudgetError
from .model import LatencyModel
from .structures import Structure, structures


@dataclass
class LatencyBudget:
    model: LatencyModel
    dense_config: Any
    target_ms: float
    target_speedup: float
    image_size: int | None = None
    #: the dense model's latency as the latency model predicts it (the reference of every predicted speed-up)
    dense_predicted_ms: float = 0.0
    #: pruned model -> its measured speed-up over the dense model (deployed the same way, paired); set by
    #: :func:`p3b_hf.latency.verify.prepare`, None in pure-model use (no closed loop then)
    meter: Callable[[Any], float] | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        model: LatencyModel,
        dense_config: Any,
        *,
        target_speedup: float | None = None,
        target_latency_ms: float | None = None,
        image_size: int | None = None,
    ) -> LatencyBudget:
        dense_ms = model.dense_ms  # measured
        dense_pred = model.predict_structs(structures(dense_config, image_size, dense_config))
        if target_speedup is not None:
            speedup = float(target_speedup)
        elif target_latency_ms is not None:
            if float(target_latency_ms) >= dense_ms:
                raise BudgetError(
                    f"--target-latency-ms {float(target_latency_ms):.3f} is not below the dense model's measured "
                    f"{dense_ms:.3f} ms on this backend; give a smaller target (or --target-speedup > 1)."
                )
            speedup = dense_ms / float(target_latency_ms)
        else:
            raise BudgetError("A latency budget needs --target-speedup or --target-latency-ms.")
        target_ms = dense_pred / speedup
        if target_ms <= model.rest_ms:
            raise BudgetError(
                f"A {speedup:.2f}x speed-up is unreachable: the parts of the model that are not "
                f"prunable blocks (embedding, norms, head, framework overhead) alone take {model.rest_ms:.3f} of "
                f"the dense {dense_pred:.3f} ms (at most {dense_pred / max(model.rest_ms, 1e-9):.2f}x). Give a "
                "smaller --target-speedup."
            )
        return cls(model, dense_config, target_ms, speedup, image_size, dense_pred)

    def at(self, speedup: float) -> LatencyBudget:
        """The same budget asking the latency model for ``speedup`` instead (the closed loop's corrected ask;
        the meter stays)."""
        return replace(self, target_ms=self.dense_predicted_ms / speedup, target_speedup=speedup)

    @property
    def dense_ms(self) -> float:
        """The dense model's latency in the latency model's milliseconds (what ``target_ms`` divides)."""
        return self.dense_predicted_ms or self.model.dense_ms

    def structures(self, config: Any | None = None) -> list[Structure]:
        return structures(
            config if config is not None else self.dense_config, self.image_size, self.dense_config
        )

    def predict(self, config: Any) -> float:
        """Predicted ms per batch of the model with ``config`` (pruned or dense)."""
        return self.model.predict_structs(self.structures(config))

    def predicted_speedup(self, config: Any) -> float:
        return self.dense_ms / max(self.predict(config), 1e-12)

    def curve_of(self, s: Structure) -> Any:
        return self.model.curves[s.curve]

    def summary(self) -> dict[str, Any]:
        return {
            "target_ms": self.target_ms,
            "target_speedup": self.target_speedup,
            "dense_predicted_ms": self.dense_predicted_ms,
            **self.model.summary(),
        }
