"""What a method receives for a latency budget: the calibrated model, the dense architecture, and the target.

``target_ms`` is the latency the pruned model may take per batch, as *predicted* by the latency model (the
dense prediction equals the measured dense time, :mod:`.model`): ``--target-speedup X`` means
``dense_ms / X``; ``--target-latency-ms T`` means ``T``. The methods spend it (docs/latency.md), the run
measures what they achieved (:mod:`.verify`).
"""

from __future__ import annotations

from dataclasses import dataclass
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
        dense_ms = model.dense_ms
        if target_speedup is not None:
            target_ms = dense_ms / float(target_speedup)
        elif target_latency_ms is not None:
            target_ms = float(target_latency_ms)
        else:
            raise BudgetError("A latency budget needs --target-speedup or --target-latency-ms.")
        if target_ms >= dense_ms:
            raise BudgetError(
                f"--target-latency-ms {target_ms:.3f} is not below the dense model's measured {dense_ms:.3f} ms "
                "on this backend; give a smaller target (or --target-speedup > 1)."
            )
        if target_ms <= model.rest_ms:
            raise BudgetError(
                f"A {dense_ms / target_ms:.2f}x speed-up is unreachable: the parts of the model that are not "
                f"prunable blocks (embedding, norms, head, framework overhead) alone take {model.rest_ms:.3f} of "
                f"the dense {dense_ms:.3f} ms (at most {dense_ms / max(model.rest_ms, 1e-9):.2f}x). Give a "
                "smaller --target-speedup."
            )
        return cls(model, dense_config, target_ms, dense_ms / target_ms, image_size)

    @property
    def dense_ms(self) -> float:
        return self.model.dense_ms

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
        return {"target_ms": self.target_ms, "target_speedup": self.target_speedup, **self.model.summary()}
