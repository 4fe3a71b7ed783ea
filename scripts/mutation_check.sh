#!/usr/bin/env bash
# Mutation check: each line breaks the math on purpose; the named tests must fail (prints "caught").
cd "$(dirname "$0")/.."
run() { # file, python-replace-from, to, tests
  cp "$1" /tmp/orig_file
  python3 -c "import sys; p,a,b=sys.argv[1:4]; s=open(p).read(); assert a in s, a; open(p,'w').write(s.replace(a,b,1))" "$1" "$2" "$3"
  if timeout 600 .venv/bin/python -m pytest -q -x $4 > /tmp/mut.log 2>&1; then echo "NOT CAUGHT: $2 -> $3"; else echo "caught: $2 -> $3 ($(grep -m1 FAILED /tmp/mut.log))"; fi
  cp /tmp/orig_file "$1"
}
run gumbel_rerank/masking.py "return torch.log(weights.clamp_min" "return -torch.log(weights.clamp_min" tests/test_readers.py
run gumbel_rerank/topk.py "draws = torch.softmax((kappa * scores.unsqueeze(0) + noise) / tau, dim=-1)" "draws = ((kappa * scores.unsqueeze(0) + noise) / tau).exp()" tests/test_topk.py
run gumbel_rerank/readers/base.py "    model.requires_grad_(False)" "    pass" "tests/test_readers.py tests/test_objectives.py"
run gumbel_rerank/objectives/gumbel.py "nll = answer_nll(reader, batch, drawn.masks)" "nll = -answer_nll(reader, batch, drawn.masks)" tests/test_objectives.py
run gumbel_rerank/topk.py "    nu = nu - (m0.sum(-1, keepdim=True) - k) / slope" "    nu = nu + 0 * slope" tests/test_topk.py
run gumbel_rerank/topk.py "return centred / torch.sqrt(var + 1e-12)" "return centred" tests/test_topk.py
run gumbel_rerank/topk.py "hard = hard_topk(soft, k=k).clamp_min(ST_FLOOR)" "hard = hard_topk(soft, k=k)" "tests/test_topk.py tests/test_calibration.py"
run gumbel_rerank/readers/decoder.py "answer += self._ids(self.template.end)" "answer += []" tests/test_calibration.py
run gumbel_rerank/evaluation/evaluate.py "if has_bridge(ex.docs) else set()" "if True else set()" tests/test_calibration.py
run gumbel_rerank/readers/sequential.py "bias = torch.where(same_doc.unsqueeze(1), torch.zeros((), dtype=log_w.dtype), kb.unsqueeze(2))" "bias = torch.zeros_like(kb.unsqueeze(2).expand(-1, -1, kb.shape[-1], -1))" tests/test_readers.py
run gumbel_rerank/objectives/teachers.py "views = eye if keep_alone else 1 - eye" "views = 1 - eye if keep_alone else eye" tests/test_rivals.py
run gumbel_rerank/objectives/base.py "p_logp.exp() * (p_logp - q_logp)" "p_logp.exp() * (q_logp - p_logp)" "tests/test_objectives.py tests/test_rivals.py"
run gumbel_rerank/readers/parallel.py "        return to_device(ctx, self.device)  # ids and masks" "        return ctx  # ids and masks" tests/test_devices.py
run gumbel_rerank/readers/fid.py "input_ids=enc[\"input_ids\"].to(self.device)" "input_ids=enc[\"input_ids\"]" tests/test_devices.py
run gumbel_rerank/prefix_cache.py "        if not same:" "        if False:" tests/test_prefix_cache.py
run gumbel_rerank/prefix_cache.py "        return self._run(layers[depth:], hidden, attention)" "        return self._run(layers[depth + 1 :], hidden, attention)" tests/test_prefix_cache.py
run gumbel_rerank/objectives/reinforce.py "base = (reward.sum(1, keepdim=True) - reward) / (S - 1)  # leave-one-out" "base = reward.sum(1, keepdim=True) / S  # leave-one-out" tests/test_reinforce.py
run gumbel_rerank/objectives/reinforce.py "                base = answer_nll(reader, batch, greedy.unsqueeze(1))" "                base = reward" tests/test_reinforce.py
run gumbel_rerank/objectives/reinforce.py "out = out + theta.gather(-1, pick).squeeze(-1) - torch.logsumexp(remaining, dim=-1)" "out = out + theta.gather(-1, pick).squeeze(-1) - torch.logsumexp(theta, dim=-1)" tests/test_reinforce.py
run gumbel_rerank/readers/attention.py "torch.finfo(logits.dtype).min) if is_bool else logits + mask" "torch.finfo(logits.dtype).min) if is_bool else logits" tests/test_attention.py
run gumbel_rerank/rerankers.py "        return out[torch.argsort(torch.tensor(order, device=out.device))]" "        return out" tests/test_rerankers.py
