import json
import logging
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidConfig
from server.nlu.count_vectors import CountVectorsFeaturizer
from server.nlu.evaluation import cross_validate, evaluate
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.tokenizer import tokenize
from server.training.nlu_yaml import read_nlu_yaml
from tests.line_budget import lines_run_in


def test_whitespace_tokenizer_trims_punctuation():
    tokens = tokenize("Hello, world! I'm ok...")
    assert [(t.text, t.start, t.end) for t in tokens] == [
        ("Hello", 0, 5),
        ("world", 7, 12),
        ("I'm", 14, 17),
        ("ok", 18, 20),
    ]


def test_a_message_of_only_emoji_or_punctuation_is_one_token() -> None:
    """Before, "👍" or ":)" had no token (`text_tokens: []`, no word features); as in Rasa,
    such a text is one token of its own."""
    data = read_nlu_yaml(
        "nlu:\n- intent: affirm\n  examples: |\n    - yes\n    - 👍\n    - 👍👍\n"
        "- intent: deny\n  examples: |\n    - no\n    - never\n    - not at all\n"
        "    - no way\n    - nope\n",
        "nlu.yml",
    )
    pipeline = NLUPipeline.train(data, [{"name": "DIETClassifier"}])
    parsed = pipeline.parse("👍")
    assert parsed["text_tokens"] == [[0, 1]]
    assert parsed["intent"]["name"] == "affirm"
    assert [(t.text, t.start, t.end) for t in tokenize(" :) ")] == [(":)", 1, 3)]
    assert tokenize("  ") == []


@pytest.mark.parametrize(("texts", "said"), [(["hi"], "on 1 example"), ([], "on 0 examples")])
def test_count_vectors_limits_that_keep_nothing_count_the_examples(
    texts: list[str], said: str
) -> None:
    """Before: "on these 1 examples", for none too; "on these 2 examples" is now "on 2
    examples"."""
    featurizer = CountVectorsFeaturizer({"max_df": 0.5, "min_df": 1})
    with pytest.raises(InvalidConfig) as caught:
        featurizer.train([Message(t, tokenize(t)) for t in texts], None)
    assert str(caught.value).endswith(f"keeps fewer documents than 'min_df' (1) {said}")


def test_count_vectors_char_wb_ngrams():
    featurizer = CountVectorsFeaturizer({"analyzer": "char_wb", "min_ngram": 2, "max_ngram": 3})
    message = Message("Hi", tokenize("Hi"))
    assert featurizer.ngrams(message) == [" h", "hi", "i ", " hi", "hi "]
    featurizer.train([message], None)
    indices, values, width = message.blocks[0]
    assert width == 5 and len(indices) == 5
    assert abs(sum(v * v for v in values) - 1.0) < 1e-6


def test_count_vectors_char_wb_keeps_a_servers_vocabulary_but_not_long_words() -> None:
    """A word's char_wb columns are formed once: 512 words were kept, fewer than 100 SNIPS
    sentences hold, so a stream of sentences formed the n-grams of words seen before; a long
    word (a pasted blob) is not kept, so what is kept stays bounded."""
    from server.nlu import count_vectors

    featurizer = CountVectorsFeaturizer({"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 3})
    words = [f"w{i:04d}" for i in range(2_000)]
    featurizer.train([Message(w, tokenize(w)) for w in words], None)
    for _ in range(2):
        for w in words:
            featurizer.process(Message(w, tokenize(w)))
    info = featurizer._word_columns.cache_info()
    assert (info.misses, info.currsize) == (2_000, 2_000)
    long_word = "w" * (count_vectors.CACHED_WORD + 1)
    message = Message(long_word, tokenize(long_word))
    featurizer.process(message)
    assert message.blocks[-1][0] == sorted(featurizer.vocabulary_[g] for g in (" ", " w", "w"))
    assert featurizer._word_columns.cache_info().currsize == 2_000


def test_count_vectors_weigh_like_sublinear_tfidf() -> None:
    # scikit-learn's TfidfVectorizer over the same n-grams: 1 + log(count) times the smoothed
    # IDF, L2-normalised (repeated n-grams and n-grams outside the vocabulary included).
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = ["hello there", "hi hi there friend", "good morning", "I am very very sad"]
    parse = ["hi hi hi there", "very very very good unknown", "nothing known", "sad sad morning"]
    for config in (
        {"analyzer": "word", "min_ngram": 1, "max_ngram": 2},
        {"analyzer": "char_wb", "min_ngram": 2, "max_ngram": 4},
        {"analyzer": "char", "min_ngram": 1, "max_ngram": 3},
    ):
        featurizer = CountVectorsFeaturizer(config)
        featurizer.train([Message(t, tokenize(t)) for t in train], None)

        def grams(text: str) -> list[str]:
            return featurizer.ngrams(Message(text, tokenize(text)))  # noqa: B023

        reference = TfidfVectorizer(analyzer=grams, sublinear_tf=True, dtype=np.float64)
        reference.fit(train)
        assert reference.vocabulary_ == featurizer.vocabulary_
        for text in parse:
            message = Message(text, tokenize(text))
            featurizer.process(message)
            indices, values, width = message.blocks[0]
            row = reference.transform([text]).tocsr()
            row.sort_indices()
            assert width == len(featurizer.vocabulary_)
            assert indices == row.indices.tolist()
            assert values == pytest.approx(row.data.tolist(), rel=1e-6)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_df": 0.5},
        {"max_df": 2, "min_df": 2},
        {"min_df": 0.4},
        {"max_features": 3},
        {"max_features": 4, "max_df": 0.7},
    ],
)
def test_count_vectors_keep_the_vocabulary_scikit_learn_keeps(limits: dict) -> None:
    # Before: max_df and max_features were ignored, so the vocabulary kept every n-gram.
    from sklearn.feature_extraction.text import CountVectorizer

    train = ["hi there", "hi hi there friend", "good morning there", "very very sad", "hi sad"]
    featurizer = CountVectorsFeaturizer(limits)
    featurizer.train([Message(t, tokenize(t)) for t in train], None)
    reference = CountVectorizer(
        analyzer=lambda text: featurizer.ngrams(Message(text, tokenize(text))), **limits
    )
    reference.fit(train)
    assert featurizer.vocabulary_ == reference.vocabulary_


def test_evaluate_writes_rasa_report_files(tmp_path: Path, load_bot):
    data = load_bot("formbot")
    pipeline = NLUPipeline.train(data, [{"name": "DIETClassifier"}])
    summary = evaluate(pipeline, data, tmp_path)
    assert summary["intent_evaluation"]["accuracy"] > 0.95
    names = {p.name for p in tmp_path.iterdir()}
    assert {"intent_report.json", "DIETClassifier_report.json"} <= names
    # As Rasa's: no errors file when every prediction is right (before: files of `[]`).
    assert not {"intent_errors.json", "DIETClassifier_errors.json"} & names
    assert {"intent_confusion_matrix.png", "intent_histogram.png"} <= names


def test_entity_report_counts_tokens_as_rasas(tmp_path: Path, load_bot):
    """As Rasa's `<extractor>_report.json`: each token's entity type (`no_entity` aside) is a
    label, with `confused_with`, and the report has Rasa's `accuracy` and averages. Before,
    entities were counted (support 2 for `cuisine` here, no `accuracy`)."""
    pipeline = NLUPipeline.train(load_bot("formbot"), [{"name": "DIETClassifier"}])
    test = read_nlu_yaml(
        "nlu:\n- intent: inform\n  examples: |\n"
        "    - [italian](cuisine) food\n    - [zzqx yyqx](cuisine) please\n",
        "test.yml",
    )
    evaluate(pipeline, test, tmp_path, plot=False)
    report = json.loads((tmp_path / "DIETClassifier_report.json").read_text())
    assert set(report) == {"cuisine", "accuracy", "micro avg", "macro avg", "weighted avg"}
    assert report["cuisine"]["support"] == 3  # italian, zzqx, yyqx
    assert report["cuisine"]["recall"] == 1 / 3
    assert report["cuisine"]["confused_with"] == {}
    assert report["accuracy"] == 3 / 5  # italian, food and please of the five tokens


def test_entity_errors_list_the_examples_an_extractor_got_wrong(tmp_path: Path, load_bot):
    """As Rasa's `<extractor>_errors.json` and the `errors` of `POST /model/test/intents`'s
    entity evaluation; before, no file, and `errors` was always []."""
    pipeline = NLUPipeline.train(load_bot("formbot"), [{"name": "DIETClassifier"}])
    test = read_nlu_yaml(
        "nlu:\n- intent: inform\n  examples: |\n"
        "    - [italian](cuisine) food\n    - my feedback is [great](cuisine)\n"
        "- intent: greet\n  examples: |\n    - hello\n",
        "test.yml",
    )
    evaluate(pipeline, test, tmp_path)
    errors = json.loads((tmp_path / "DIETClassifier_errors.json").read_text())
    assert [e["text"] for e in errors] == ["my feedback is great"]
    assert errors[0]["entities"] == [
        {"start": 15, "end": 20, "value": "great", "entity": "cuisine"}
    ]
    predicted = [(e["entity"], e["value"]) for e in errors[0]["predicted_entities"]]
    assert predicted == [("feedback", "great")]


def test_evaluation_scores_the_intent_a_fallback_doubted(tmp_path: Path, load_bot):
    """As Rasa: a FallbackClassifier's `nlu_fallback` is undone for the evaluation (its
    threshold of 1.0 here makes every message fall back). Before, every example counted
    as predicted `nlu_fallback`: accuracy 0."""
    data = load_bot("moodbot")
    config: list[dict] = [
        {"name": "DIETClassifier"},
        {"name": "FallbackClassifier", "threshold": 1.0},
    ]
    pipeline = NLUPipeline.train(data, config)
    assert pipeline.parse("hello")["intent"]["name"] == "nlu_fallback"
    summary = evaluate(pipeline, data, tmp_path)
    assert summary["intent_evaluation"]["accuracy"] > 0.95
    report = json.loads((tmp_path / "intent_report.json").read_text())
    assert "nlu_fallback" not in report


def test_entity_errors_are_written_as_rasa_writes_them(tmp_path: Path, load_bot):
    from server.nlu.training_data import EntityAnnotation, Example, NLUTrainingData

    data = load_bot("formbot")
    pipeline = NLUPipeline.train(data, [{"name": "DIETClassifier"}])
    # One example whose annotated entity nothing in training looks like.
    odd = Example("zzqx please", "inform", [EntityAnnotation(0, 4, "zzqx", "cuisine")])
    # Rasa evaluates an extractor that finds entities in the test data.
    test = NLUTrainingData(examples=[*[e for e in data.examples if e.entities][:20], odd])
    evaluate(pipeline, test, tmp_path, successes=True)
    wrong = json.loads((tmp_path / "DIETClassifier_errors.json").read_text())
    assert {"text": "zzqx please", "entities": [odd.entities[0].as_dict()]} in [
        {k: w[k] for k in ("text", "entities")} for w in wrong
    ]
    assert all(
        {(e["start"], e["end"], e["entity"]) for e in w["entities"]}
        != {(e["start"], e["end"], e["entity"]) for e in w["predicted_entities"]}
        for w in wrong
    )
    right = json.loads((tmp_path / "DIETClassifier_successes.json").read_text())
    assert len(right) + len(wrong) == len(test.examples)


def test_evaluate_reports_the_response_selector_as_rasa(tmp_path: Path, load_bot):
    # responseselectorbot's chitchat/ask_name ...: Rasa's response_selection_* files, by the
    # full retrieval intent; before, the response selector was not evaluated at all.
    data = load_bot("responseselectorbot")
    pipeline = NLUPipeline.train(
        data,
        [{"name": "DIETClassifier", "entity_recognition": False}, {"name": "ResponseSelector"}],
    )
    summary = evaluate(pipeline, data, tmp_path, successes=True)
    assert summary["response_selection_evaluation"]["accuracy"] > 0.9
    report = json.loads((tmp_path / "response_selection_report.json").read_text())
    assert {"chitchat/ask_name", "chitchat/ask_weather"} <= set(report)
    hits = json.loads((tmp_path / "response_selection_successes.json").read_text())
    assert (
        hits[0]["intent_response_key_target"] == hits[0]["intent_response_key_prediction"]["name"]
    )
    names = {p.name for p in tmp_path.iterdir()}
    assert "response_selection_histogram.png" in names
    errors = tmp_path / "response_selection_errors.json"
    assert not errors.exists() or json.loads(errors.read_text())  # as Rasa's: none, no file
    assert "response_selection_confusion_matrix.png" in names


def test_cross_validation(tmp_path: Path, load_bot):
    summary = cross_validate(load_bot("moodbot"), [], 3, tmp_path)
    assert len(summary["fold_accuracies"]) == 3
    assert (tmp_path / "intent_report.json").exists()


def test_cross_validation_measures_each_fold_of_the_response_selector(tmp_path: Path, load_bot):
    """`rasa test nlu --cross-validation` on responseselectorbot also sums up the responses
    chosen, fold by fold, as it does the intents."""
    pipeline = [{"name": "DIETClassifier"}, {"name": "ResponseSelector"}]
    summary = cross_validate(load_bot("responseselectorbot"), pipeline, 2, tmp_path)
    assert set(summary["fold_metrics"]) == {"intent", "response"}
    for metrics in summary["fold_metrics"].values():
        assert set(metrics) == {"Accuracy", "F1-score", "Precision"}
        assert all(len(values) == 2 for values in metrics.values())
    assert summary["fold_metrics"]["intent"]["Accuracy"] == summary["fold_accuracies"]


def test_cross_validation_of_a_rare_intent_prints_no_sklearn_warning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """concertbot's `test nlu --cross-validation -f 3`: an intent of two examples printed
    sklearn's `UserWarning: The least populated class in y has only 2 members`, with the
    path of sklearn's file; the rare intents' shared bucket was itself too small."""
    data = read_nlu_yaml(
        "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n    - hey\n"
        "    - good morning\n- intent: bye\n  examples: |\n    - bye\n    - see you\n"
        "    - goodbye\n    - later\n- intent: thanks\n  examples: |\n    - thanks\n"
        "    - thank you\n",
        "nlu.yml",
    )
    summary = cross_validate(data, [], 3, tmp_path)
    assert len(summary["fold_accuracies"]) == 3
    assert not [w for w in recwarn if "least populated class" in str(w.message)]


def test_cross_validation_says_the_pipelines_warnings_once(
    tmp_path: Path, load_bot, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, each fold's training said them again: three folds, three copies."""
    with caplog.at_level(logging.WARNING):
        cross_validate(load_bot("moodbot"), [{"name": "DIETClassifier"}], 3, tmp_path)
    said = [r for r in caplog.records if "run as botserver equivalents" in r.getMessage()]
    assert len(said) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # and again in the next cross-validation
        cross_validate(load_bot("moodbot"), [{"name": "DIETClassifier"}], 2, tmp_path)
    assert [r for r in caplog.records if "run as botserver equivalents" in r.getMessage()]


def test_cross_validation_says_an_unreachable_duckling_once(
    tmp_path: Path, load_bot, caplog: pytest.LogCaptureFixture
) -> None:
    """formbot's `test nlu --cross-validation` without Duckling running: each fold's pipeline
    said Duckling failed, once per fold."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    pipeline = [{"name": "DucklingEntityExtractor", "url": url, "dimensions": ["number"]}]
    with caplog.at_level(logging.WARNING):
        cross_validate(load_bot("moodbot"), pipeline, 3, tmp_path)
    said = [r for r in caplog.records if "Duckling at" in r.getMessage()]
    assert len(said) == 1


def test_a_training_beside_a_cross_validation_still_says_its_warnings(
    tmp_path: Path, load_bot, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server cross-validates (POST /model/test/intents) in a thread, and a training
    (POST /model/train) may run in another meanwhile. Before, a warning the cross-validation
    had said was dropped from the other training's log too (and any other thread's)."""
    data = load_bot("moodbot")
    pipeline = [{"name": "DIETClassifier"}]
    real_train = NLUPipeline.train.__func__  # type: ignore[attr-defined]
    beside: list[NLUPipeline] = []

    def train(cls: type[NLUPipeline], *args: Any, **kwargs: Any) -> NLUPipeline:
        model = real_train(cls, *args, **kwargs)
        if not beside:  # after the first fold's training, one in another thread
            other = threading.Thread(target=lambda: beside.append(real_train(cls, data, pipeline)))
            other.start()
            other.join()
        return model

    monkeypatch.setattr(NLUPipeline, "train", classmethod(train))
    with caplog.at_level(logging.WARNING):
        cross_validate(data, pipeline, 2, tmp_path)
    said = [r for r in caplog.records if "run as botserver equivalents" in r.getMessage()]
    assert len(beside) == 1
    assert len(said) == 2  # the cross-validation's, once, and the other training's


def test_entity_extractors_get_a_confusion_matrix_as_rasa(tmp_path: Path, load_bot):
    """As Rasa's `<extractor>_confusion_matrix.png`: tokens by entity type (`no_entity` for a
    token outside any entity), annotated against found; and, for an extractor that gives
    confidences, `<extractor>_histogram.png`. Before, only the intents had them."""
    from server.nlu.training_data import EntityAnnotation, Example, NLUTrainingData

    data = load_bot("formbot")
    pipeline = NLUPipeline.train(data, [{"name": "DIETClassifier"}])
    odd = Example("zzqx please", "inform", [EntityAnnotation(0, 4, "zzqx", "cuisine")])
    test = NLUTrainingData(examples=[*[e for e in data.examples if e.entities][:20], odd])
    evaluate(pipeline, test, tmp_path)
    for plot in ("DIETClassifier_confusion_matrix.png", "DIETClassifier_histogram.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")
    from server.nlu.evaluation import entity_token_labels, predict

    annotated, found, confidences = entity_token_labels(
        predict(pipeline, NLUTrainingData([odd])), "DIETClassifier"
    )
    assert list(zip(annotated, found, confidences, strict=True)) == [
        ("cuisine", "no_entity", 0.0),
        ("no_entity", "no_entity", 0.0),
    ]

    (tmp_path / "no_plot").mkdir()
    evaluate(pipeline, test, tmp_path / "no_plot", plot=False)
    assert not [p for p in (tmp_path / "no_plot").iterdir() if p.suffix == ".png"]


def test_crf_features_of_a_word_seen_in_another_case_keep_their_own_case() -> None:
    """The CRF's feature names, formatted once a word (twentieth round) and given to
    crfsuite as names of value 1 in the order it was trained on: `Play` and `play` keep
    their own shape and title features however often either was seen before."""
    from server.nlu.crf_extractor import token_features
    from server.nlu.message import Token

    tokens = [Token("Play", 0, 4), Token("play", 5, 9), Token("42", 10, 12)]
    for _ in range(2):
        first, second, third = token_features(tokens, [{"num"}, set(), set()])
        assert first == [
            "bias", "w=play", "shape=Xx", "p2=pl", "p3=pla", "s2=ay", "s3=lay", "s4=play",
            "title", "BOS", "1:w=play", "1:shape=x", "1:s3=lay", "2:w=42", "0|1:w=play|play",
            "pattern=num",
        ]  # fmt: skip
        assert second[:8] == ["bias", "w=play", "shape=x", "p2=pl", "p3=pla", "s2=ay"] + [
            "s3=lay",
            "s4=play",
        ]
        assert "title" not in second and "-1:shape=Xx" in second
        assert third[:10] == ["bias", "w=42", "shape=d", "p2=42", "p3=42", "s2=42", "s3=42"] + [
            "s4=42",
            "digit",
            "EOS",
        ]
        assert len(set(first + second + third)) < len(first + second + third)  # "bias"
        assert all(len(set(names)) == len(names) for names in (first, second, third))


def test_crf_feature_names_of_long_words_are_not_kept_between_parses() -> None:
    """A user's long words (a pasted blob) are formatted for each parse and not kept: the
    kept names stay a bounded size whatever is typed."""
    from server.nlu import crf_extractor
    from server.nlu.message import Token

    crf_extractor._word_features.cache_clear()
    long_word = "x" * (crf_extractor.CACHED_WORD + 1)
    names = crf_extractor.token_features([Token(long_word, 0, len(long_word))], None)[0]
    assert f"w={long_word}" in names and "s4=xxxx" in names
    assert crf_extractor._word_features.cache_info().currsize == 0
    crf_extractor.token_features([Token("short", 0, 5)], None)
    assert crf_extractor._word_features.cache_info().currsize == 1


@pytest.mark.parametrize("analyzer", ["word", "char", "char_wb"])
def test_count_vectors_with_a_huge_max_ngram_stop_at_the_messages_length(analyzer: str) -> None:
    # scikit-learn (Rasa's featurizer) takes n-grams up to the text's length, whatever
    # max_ngram says; before, the word and char analyzers counted up to max_ngram for every
    # message: `max_ngram: 100000000` in a training request held its thread for hours.
    from server.nlu import count_vectors

    message = Message("hi there", tokenize("hi there"))
    huge = CountVectorsFeaturizer({"analyzer": analyzer, "max_ngram": 100_000_000})
    longest = CountVectorsFeaturizer({"analyzer": analyzer, "max_ngram": len("hi there") + 2})
    grams: list[str] = []
    lines_run_in(count_vectors.__file__, lambda: grams.extend(huge.ngrams(message)), 1_000)
    assert grams == longest.ngrams(message)


# Texts a user may type: other scripts, combining marks, emoji, controls, none, a long one.
HOSTILE_TEXTS = [
    "",
    "   ",
    "Play Beyoncé's ÉTÉ song on Spotify, please!",
    "naïve cafe\u0301 ΣΟΦΟΣ σοφός 日本語のテキスト 👍🏽 مرحبا",
    "tab\tnew\nline\x00nul \x1c sep \u00a0nbsp\u2028",
    "a" * 200 + " " + "b" * 64 + " " + "c" * 65,
    " ".join(f"w{i % 700}" for i in range(5_000)),
]


@pytest.mark.parametrize(
    "config",
    [
        {"analyzer": "word", "min_ngram": 1, "max_ngram": 3},
        {"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 6},
        {"analyzer": "char_wb", "min_ngram": 2, "max_ngram": 4, "lowercase": False},
        {"analyzer": "char", "min_ngram": 1, "max_ngram": 3},
    ],
)
def test_count_vectors_parse_gives_the_block_training_gives(config: dict) -> None:
    """A parse looks a word's columns up once (char_wb) and counts in C; training forms every
    n-gram of the message: the same block for any text, twice over (the second time from the
    cache), and for the words alone (`words_block`)."""
    featurizer = CountVectorsFeaturizer(config)
    featurizer.train([Message(t, tokenize(t)) for t in HOSTILE_TEXTS[2:]], None)
    for text in HOSTILE_TEXTS * 2:
        message = Message(text, tokenize(text))
        expected = featurizer._weigh(featurizer.ngrams(message))
        featurizer.process(message)
        assert message.blocks[-1] == expected
        assert featurizer.words_block([t.text for t in message.tokens]) == expected


@pytest.mark.parametrize(("low", "high"), [(1, 1), (1, 3), (2, 2), (2, 5), (3, 4)])
def test_word_ngrams_are_the_words_of_each_window_joined_by_one_space(low: int, high: int) -> None:
    """The word n-grams of a message, bigrams by their own path included, are what
    scikit-learn (and an archive's vocabulary) holds: each window of n words joined by one
    space, by n then position. Training and parsing share the code that forms them, so
    comparing the two would not see a change in them."""
    featurizer = CountVectorsFeaturizer({"min_ngram": low, "max_ngram": high})
    for text in HOSTILE_TEXTS[:-1]:
        words = [t.text.lower() for t in tokenize(text)]
        expected = [
            " ".join(words[i : i + n])
            for n in range(low, min(high, len(words)) + 1)
            for i in range(len(words) - n + 1)
        ]
        assert featurizer.ngrams(Message(text, tokenize(text))) == expected


def test_a_sparse_vector_is_the_blocks_side_by_side_as_numpy_converts_them() -> None:
    blocks = [
        ([], [], 0),
        ([0, 2], [0.1, 1e-50], 3),
        ([], [], 5),
        ([4, 7], [1 / 3, -2.5e38], 8),
        (list(range(128)), [i / 7 for i in range(128)], 128),
    ]
    message = Message("x", blocks=blocks)
    indices, values = message.sparse_vector()
    offsets = np.cumsum([0] + [width for _, _, width in blocks])
    expected = [o + i for (b, _, _), o in zip(blocks, offsets[:-1], strict=True) for i in b]
    assert indices.dtype == np.int64 and indices.tolist() == expected
    expected_values = np.asarray([v for _, b, _ in blocks for v in b], dtype=np.float32)
    assert values.dtype == np.float32 and values.tobytes() == expected_values.tobytes()
    empty = Message("").sparse_vector()
    assert empty[0].dtype == np.int64 and empty[1].dtype == np.float32
    assert len(empty[0]) == len(empty[1]) == 0


def test_crf_word_shapes_of_ascii_words_follow_the_per_character_rule() -> None:
    """ASCII words take a translation table; the shape is the per-character rule's (upper
    X, lower x, digit d, anything else itself; runs of one mark kept once)."""
    from server.nlu import crf_extractor

    def by_characters(word: str) -> str:
        mapped = "".join(
            "X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word
        )
        return crf_extractor._NON_SHAPE.sub(r"\1", mapped)

    words = ["".join(map(chr, range(128))), "McDonald's", "ABC123xyz!!", "a\x00b", "x" * 300]
    words += [t.text for text in HOSTILE_TEXTS for t in tokenize(text)]
    for word in words:
        assert crf_extractor._shape(word) == by_characters(word)
