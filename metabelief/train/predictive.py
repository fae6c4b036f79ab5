"""The predictive objective (Kuo et al. 2025): the memory must also predict what comes next.

An auxiliary linear head (``agent.predict``, built with ``TrainConfig(predictive_coef > 0)``)
reads the readout ``h_t`` and the action ``a_t`` about to be taken and predicts the reward ``r_t``
and, where the family has observations, the next observation ``o_{t+1}``. Its loss, added to the
RL loss with weight ``predictive_coef``, is the mean squared error of the reward plus the mean
squared error over the observation's entries, each averaged over steps and tasks; its gradient
flows into the recurrent memory the policy reads.

How this follows and departs from Kuo, Hou, Dabney & Walker (NeurIPS 2025;
github.com/walkerlab/metaRL-predictive-representation, ``vae.py``, ``models/decoder.py``,
``algorithms/a2c.py``): like theirs, the prediction is of the next reward given the action taken
(``RewardDecoder`` with ``input_action``) from a recurrent memory of (observation, previous action,
previous reward), and the policy acts on what that memory holds. Unlike theirs: (i) the memory is
deterministic, with no latent sample and no KL term (their encoder is a VAE: a Gaussian latent of
3 dimensions, a KL to the previous step's posterior at weight 0.01); (ii) the decoder is one linear
layer, not an MLP of 32 units, and the loss a squared error (their Bernoulli reward uses a binary
cross-entropy); (iii) one network and one optimiser: the policy gradient and the prediction
gradient both train the memory (their encoder is trained by the ELBO alone, with its own optimiser,
and the policy MLP reads the latent's mean and log-variance without a gradient into the encoder,
``policy_gradient_through_encoder=False``). It is the auxiliary-loss form of their idea, the one an
RL² agent gains by adding a head, so the same memory can be compared with and without it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metabelief.agents.base import Agent
from metabelief.rollout import Trajectory
from metabelief.tasks.base import PyTree


def prediction_loss(agent: Agent, params: PyTree, hidden: jax.Array, episode: Trajectory) -> jax.Array:
    """Squared error of the predicted reward (and next observation) at every step.

    Args:
      agent: an agent with a ``predict`` head.
      hidden: ``[T, N, H]`` readouts, differentiable in ``params``.
      episode: the episode (``actions``, ``rewards`` ``[T, N]``; ``obs`` ``[T + 1, N, O]``).
    """
    predicted = agent.predict(params, hidden, episode.actions)  # [T, N, 1 + O]
    loss = jnp.mean((predicted[..., 0] - episode.rewards) ** 2)
    if episode.obs.shape[-1] > 0:
        loss = loss + jnp.mean((predicted[..., 1:] - episode.obs[1:]) ** 2)
    return loss
