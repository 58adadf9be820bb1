"""Writes a small listening log in the HetRec 2011 Last.fm format (user_artists.dat and
artists.dat: tab-separated, a header line, no timestamps), for the README's "Bring your own
data" example and its test.

    python examples/lastfm_like/make_data.py        # rewrites the two .dat files beside it

The real data set (1,892 listeners, 17,632 artists, 92,834 rows) has the same columns; its
licence does not allow shipping it here, so this one is drawn: each listener likes two of 15
genres and plays artists of those genres far more often (popularity Zipf-like within a
genre); `weight` is the play count. Deterministic (seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
N_USERS, N_ARTISTS, N_GENRES, PER_USER = 600, 1_500, 15, 50


def draw(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, N_GENRES, N_ARTISTS)  # (n_artists,)
    appeal = 1.0 / rng.permutation(np.arange(1, N_ARTISTS + 1)) ** 0.8  # Zipf-like popularity
    liked = np.stack([rng.choice(N_GENRES, 2, replace=False) for _ in range(N_USERS)])
    fits = (genre[None, :] == liked[:, :1]) | (genre[None, :] == liked[:, 1:])  # (users, artists)
    p = appeal[None, :] * np.where(fits, 20.0, 1.0)
    p /= p.sum(axis=1, keepdims=True)
    n = rng.integers(PER_USER // 2, PER_USER * 3 // 2, N_USERS)  # artists per listener
    # Gumbel top-k: n[u] distinct artists per listener, drawn with probabilities p[u].
    keys = np.log(p) + rng.gumbel(size=p.shape)
    order = np.argsort(-keys, axis=1)
    users = np.repeat(np.arange(N_USERS), n)
    artists = np.concatenate([order[u, : n[u]] for u in range(N_USERS)])
    plays = np.ceil(rng.lognormal(5.0, 1.5, users.size)).astype(int)
    user_artists = pd.DataFrame(
        {"userID": users + 2, "artistID": artists + 1, "weight": plays}
    )  # ids start at 2 and 1, as in the real files
    names = [f"artist {i + 1} (genre {g})" for i, g in enumerate(genre)]
    artists_table = pd.DataFrame(
        {"id": np.arange(1, N_ARTISTS + 1), "name": names,
         "url": [f"http://www.last.fm/music/artist_{i + 1}" for i in range(N_ARTISTS)]}
    )  # fmt: skip
    return user_artists, artists_table


def main() -> None:
    user_artists, artists = draw()
    user_artists.to_csv(HERE / "user_artists.dat", sep="\t", index=False)
    artists.to_csv(HERE / "artists.dat", sep="\t", index=False)


if __name__ == "__main__":
    main()
