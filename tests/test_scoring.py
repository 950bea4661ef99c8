"""Student preference scoring: order, duplicates, cache reuse."""

from arte.backends import BackendConfig, load_backend
from arte.stages.elicit import Draft
from arte.stages.score import ScoredDraft, question_scores, score_drafts
from common.records import RecordLog
from common.tasks import load_task


def _drafts(task):
    out = []
    for i, ex in enumerate(task.validation[:4]):
        for strategy, answer in (("a", ex.target), ("b", "nonsense"), ("c", ex.target)):
            rationale = f"The answer is {answer}. <ans>{answer}</ans>"  # strategies a and c: identical drafts
            out.append(Draft(task.name, f"q{i}", ex.input, ex.target, strategy, rationale))
    return out


def test_scores_align_with_drafts_and_duplicates_are_scored_once(tmp_path):
    task = load_task("boolean_expressions", n_validation=20, n_test=10)
    drafts, pref = _drafts(task), task.test[:6]
    backend = load_backend(BackendConfig(name="fake", model="student"))
    cache = RecordLog(tmp_path / "cache.jsonl")
    scores = score_drafts(task, drafts, pref, backend, student_id="s", cache=cache, progress=False)
    assert len(scores) == len(drafts) == 12
    assert all(scores[i] == scores[i + 2] for i in range(0, 12, 3))  # a and c share one score
    assert len(cache.read()) == 8  # 4 questions x 2 distinct rationales
    calls = backend.calls
    again = score_drafts(
        task, drafts, pref, backend, student_id="s", cache=RecordLog(cache.path), progress=False
    )
    assert again == scores and backend.calls == calls  # all from the cache
    per_q = question_scores([ScoredDraft(**vars(d), score=s) for d, s in zip(drafts, scores)])
    assert set(per_q) == {"q0", "q1", "q2", "q3"}
    assert per_q["q0"] == sum(scores[0:3]) / 3
