"""Teacher drafts are parsed tolerantly; junk is counted, never executed."""

from arte.stages.elicit.draft_parsing import parse_question_blocks, question_key


def test_well_formed_blocks():
    text = (
        "Sure!\n<Question_4><input>not True or False is</input><target>False</target></Question_4>\n"
        "<Question_5><input>True and True is</input><target>True</target></Question_5>"
    )
    parsed = parse_question_blocks(text)
    assert parsed.questions == [("not True or False is", "False"), ("True and True is", "True")]
    assert parsed.unparsable == 0


def test_drift_is_tolerated_and_junk_counted():
    text = (
        "<Question_1> <input>2 + 2 =</input> <target>4</target>\n"  # no closing tag
        "<Question 2><input>no target here</input></Question 2>\n"  # missing target
        "<question_3><INPUT>(1 + 1) * 3 =</INPUT><target>6\n"  # case, unclosed target at the end
    )
    parsed = parse_question_blocks(text)
    assert parsed.questions == [("2 + 2 =", "4"), ("(1 + 1) * 3 =", "6")]
    assert parsed.unparsable == 1


def test_nothing_parsable():
    assert parse_question_blocks("I cannot help with that.").questions == []
    assert parse_question_blocks("").unparsable == 0


def test_model_text_is_data_only():
    evil = (
        "<Question_1><input>__import__('os').system('touch /tmp/pwned')</input>"
        "<target>0</target></Question_1>"
    )
    parsed = parse_question_blocks(evil)
    assert parsed.questions[0][0].startswith("__import__")  # kept as text, never run


def test_question_key_dedup():
    assert question_key("  Not True  is\n") == question_key("not true is")
