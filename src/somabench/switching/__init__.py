"""Shared switching: the one-time F -> G switch that SOMA, History-Prefix and History-FT use.

Why a package of its own (not inside ``somabench.soma``): the baselines switch exactly as SOMA
does (paper Sec. 3.3, Sec. 4.1, App. B.3 "The switching is the same as SOMA"), so they import
it without reaching into SOMA's package, and it imports no method: it sits in the shared
machinery layer (backends, records, methods' base types), below SOMA and the baselines.

One job per module:

- ``controller.py``: the switch rule (who serves each turn, ``SwitchConfig``, ``GATE_KEYS``);
- ``gate.py``: the cosine gate (config, null scores, calibrated threshold);
- ``acceptance.py``: the Cor. 1 / Thm. 2 acceptance test;
- ``drift.py``: the drift monitor (rollback);
- ``method.py``: ``SwitchingMethod``, the protocol turn by turn, and the session's adapter;
- ``lora.py``: training one dialogue's LoRA (Eq. 4);
- ``adapter.py``: ``SessionAdapter``, the adapter's lifecycle (one type, owned by the session);
- ``adapter_cache.py``: trained adapters reused across runs that share every training input.

The protocol (per dialogue)
---------------------------
1. **Warm window**: F serves turns ``0 .. W-1`` with the full history. No decision reads the
   dialogue's length: a deployment never knows how many turns remain. Only an explicit
   ``switch.expected_turns`` hint (off by default; ``oracle`` = the true length, recorded as an
   oracle) lets ``require_payoff`` skip adaptation/gating that could not leave a turn for G.
2. **End of the warm window** (right after turn W-1, i.e. at the start of turn W, or in
   ``finish`` when the dialogue ended exactly there: the deployment had already paid for it):
   the method adapts G (``adapt``), then
   * the **cosine gate** is calibrated (``gate.py``): its threshold is the conservative
     empirical ``(1 - alpha_hit)`` quantile of *null* scores, cosines between texts answering
     *different* warm turns, so a run of ``m`` null hits (a false switch) has probability
     ``<= false_switch_rate`` (Cor. 2 / Sec. 5);
   * the **acceptance test** (Cor. 1 / Thm. 2, ``acceptance.py``) is sized: sigma_Delta is
     estimated from Gap_old - Gap_new of the un-adapted vs adapted G on the warm contexts and
     |B| follows Thm. 2 (or ``acceptance.batch``). A method that did not adapt G has
     old == new: the test is not applicable (recorded) and the cosine gate alone decides.
3. **Gate turns**: F keeps serving (so early quality is F's); the adapted G's candidate (with
   the context G would serve with) and, for the acceptance test, the un-adapted G's candidate
   on the same messages are scored against F's answer: ``score = cos(phi(cand), phi(a^F))``.
   G serves from the next turn once **both** hold: ``m`` consecutive cosine hits
   (``score > threshold``) and ``Delta = mean Gap_old - mean Gap_new >= epsilon`` over >= |B|
   gate contexts. One switch per dialogue.
4. **After the switch** G serves; the **drift monitor** (``drift.py``: sliding query
   average vs running content centroid, checked after every turn) hands the *next* turn to F
   when it fires (rollback), then refreshes its window (SOMA refreshes its summary too).
"""
