"""Training: the one loop (:mod:`.loop`), what a run holds and its restore (:mod:`.run_state`), atomic
checkpoints, label-free selection, the trust region, the LR schedule and reader adaptation.

May import evaluation, the method and the ground below it; never comparison or serving."""
