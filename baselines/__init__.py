"""Models the two-tower is measured against and learns from: EASE in its dense closed form
(`baselines.ease`) and with the Gram matrix as diagonal plus low rank, whose memory grows
linearly in courses (`baselines.ease_low_rank`)."""

from baselines.ease import ease_weights
from baselines.ease_low_rank import LowRankEASE, low_rank_ease

__all__ = ["ease_weights", "LowRankEASE", "low_rank_ease"]
