"""How the generate stage turns teacher text into a training set worth training on (`collect`):

    question checks -> labels (the task's solver, else a majority vote) -> rationales that agree
    (tags repaired where the final sentence states an answer) -> label quotas -> N examples

Each step is its own module and counts what it drops, per task, in generate/done.json and the
summary: `question_checks`, `tag_repair`, `labels`, `balance`; `collect` draws more questions and
rationales until N examples are kept or the call budget is spent.
"""
