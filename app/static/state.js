// What the keypad and the suggestions share: the typed prefix and the active model's shape (set from /info).
export const state = { prefix: [], seqLength: 5, vocab: 10, attention: false, k: 5 };
