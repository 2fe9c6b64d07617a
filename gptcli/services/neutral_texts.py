"""Everyday sentences that are about nothing in particular: what a causal LM's label scores are
calibrated on (the label preference it shows on these is subtracted from every text's scores).

Why real sentences: the usual content-free inputs ("N/A", "", "[MASK]") are unlike any text a user
classifies, and on SmolLM2 their bias did not transfer: subtracting it sent 92-98% of the
sentiment texts to one label (train splits of sst2 and uci_reviews, 60 rows each: 50% and 55%
accuracy, against 68% and 70% with these sentences and 67% / 70% with no calibration; AG News
46% / 49% / 46%). See benchmarks/results/classify_fewshot.txt.

Source: the first 16 English sentences of the Tatoeba Challenge eng-ron dev file
(Helsinki-NLP/Tatoeba-Challenge, data/dev/eng-ron/dev.txt), the tuning split kept in
benchmarks/data/public/tatoeba_en_ro/train.jsonl. Tatoeba sentences: CC BY 2.0 FR, tatoeba.org.
"""

NEUTRAL_TEXTS = (
    "French culture continues to enjoy great prestige.",
    "Before the advent of video games children played cowboys and Indians.",
    "Almost everyone came.",
    "I'll come to pick it up later.",
    "It is still in the testing stage.",
    "Tom didn't seem drunk.",
    "Tom gave an acceptance speech.",
    "The silence was unbearable.",
    "Does this contain gluten?",
    "I worked in this factory.",
    "Sweet words bring the snake out of its hole.",
    "You met him at the university?",
    "He was playing football with an empty can.",
    "He wished to become a renowned poet.",
    "Tom doesn't know where Mary is now.",
    "I think it's time for me to go to bed.",
)
