#!/usr/bin/env bash
# Test-time scaling on a user's task files with user-shaped models (docs/your-task.md).
#   python experiments/user_models.py --out user      # the models and task files (about 20 min)
#   bash experiments/your_task_acceptance.sh user      # this script (about 20 min on 2 shared cores)
set -euo pipefail
U=${1:-user}
S=(--threads 1 --max-new-tokens 64)
declare -A SYS=([gsm8k]="Solve it step by step and end with #### and the answer."
                [math]="Solve it and put the final answer in \\boxed{}."
                [choice]="Answer with the letter of the right option.")
export OMP_NUM_THREADS=1
for f in gsm8k math choice; do
  scalelab tasks show "$U/tasks/$f.jsonl" --model "$U/models/large-llama" --system "${SYS[$f]}" --examples 1
done
# Completions from any generator can be scored: here the large model's greedy answers to 40 test problems.
for f in gsm8k math choice; do
  python - "$U" "$f" "${SYS[$f]}" <<'PY'
import json, sys
from scalelab.inference.engine import Engine, SamplingParams
from scalelab.tasks.options import TaskOptions
u, f, system = sys.argv[1:4]
eng = Engine.load(f"{u}/models/large-llama")
task = TaskOptions(task=f"{u}/tasks/{f}.jsonl", system=system, max_new_tokens=64).task_for(eng, "large-llama")
ps = task.problems("test", 40)
g = eng.generate([task.prompt(p) for p in ps], 1, SamplingParams(temperature=0, max_tokens=64, stop=task.stop))
with open(f"{u}/{f}.completions.jsonl", "w") as out:
    for p, c in zip(ps, g.completions):
        out.write(json.dumps({"id": p.id, "completion": c[0].text}) + "\n")
PY
  scalelab tasks score "$U/tasks/$f.jsonl" --completions "$U/$f.completions.jsonl" | tail -1
done
# Strategies on every model and file: chain of thought and majority voting over n samples.
for m in small-gpt2 medium-qwen2 large-llama; do
  for f in gsm8k math choice; do
    scalelab testtime --model "$U/models/$m" --task "$U/tasks/$f.jsonl" --system "${SYS[$f]}" \
      --strategies cot,majority,coverage --n 1,2,4,8,16 --problems 40 --runs-dir "$U/runs" "${S[@]}"
  done
done
# Reward models trained on each policy's own samples of the train split, then best-of-n and PRM beam search.
for m in medium-qwen2 large-llama; do
  scalelab testtime train-verifier --policy "$U/models/$m" --kind orm --task "$U/tasks/gsm8k.jsonl" \
    --system "${SYS[gsm8k]}" --problems 200 --samples 8 --runs-dir "$U/rm" "${S[@]}"
  scalelab testtime train-verifier --policy "$U/models/$m" --kind prm --task "$U/tasks/gsm8k.jsonl" \
    --system "${SYS[gsm8k]}" --problems 60 --samples 4 --rollouts 4 --runs-dir "$U/rm" "${S[@]}"
  scalelab testtime --model "$U/models/$m" --task "$U/tasks/gsm8k.jsonl" --system "${SYS[gsm8k]}" \
    --strategies best_of_n,weighted_best_of_n,beam_search --n 1,2,4,8,16 --problems 40 --runs-dir "$U/runs" \
    --orm "$(ls -d "$U"/rm/orm-"$m"-*)" --prm "$(ls -d "$U"/rm/prm-"$m"-*)" "${S[@]}"
done
for f in math choice; do  # the MATH and choice files on the large model, smaller reward-model sets
  scalelab testtime train-verifier --policy "$U/models/large-llama" --kind orm --task "$U/tasks/$f.jsonl" \
    --system "${SYS[$f]}" --problems 120 --samples 8 --runs-dir "$U/rm-$f" "${S[@]}"
  scalelab testtime train-verifier --policy "$U/models/large-llama" --kind prm --task "$U/tasks/$f.jsonl" \
    --system "${SYS[$f]}" --problems 40 --samples 4 --rollouts 4 --runs-dir "$U/rm-$f" "${S[@]}"
  scalelab testtime --model "$U/models/large-llama" --task "$U/tasks/$f.jsonl" --system "${SYS[$f]}" \
    --strategies best_of_n,beam_search --n 1,4,16 --problems 40 --runs-dir "$U/runs" \
    --orm "$(ls -d "$U"/rm-"$f"/orm-*)" --prm "$(ls -d "$U"/rm-"$f"/prm-*)" "${S[@]}"
done
scalelab testtime plot "$U/runs/large-llama/gsm8k" --out docs/figures/your_task_large_gsm8k.png
python experiments/summarise_testtime_runs.py "$U/runs" --n 1,4,16
