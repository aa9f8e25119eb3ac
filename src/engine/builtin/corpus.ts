// Training text for the byte-level BPE tokenizer of the random model and of make-checkpoint (written for this project).
// Changing it changes that tokenizer: bump RANDOM_MODEL_VERSION in ./random-model.ts when you do.
export const CORPUS = `
The quick brown fox jumps over the lazy dog. A language model reads text as a sequence of tokens and
predicts the next token, one step at a time. The tokens are pieces of words: common words are single
tokens, while rare words are split into several smaller pieces. This small model has been generated
from a fixed seed, so its answers are random until someone trains it on real data.

Hello! How are you today? I am fine, thank you. What would you like to talk about? We could talk about
the weather, about books, about music, about science, or about the history of computing. The sun is
shining and the sky is blue. It might rain later in the afternoon, so take an umbrella with you.

Once upon a time there was a little town by the sea. The people of the town were fishermen and bakers,
teachers and doctors, painters and builders. Every morning the children walked to school along the
harbour, and every evening the boats came back with their nets full of fish. The old lighthouse keeper
told stories about storms and ships, about islands far away, and about the stars that guide sailors home.

Question: What is the capital of France? Answer: The capital of France is Paris.
Question: How many days are there in a week? Answer: There are seven days in a week.
Question: What is two plus two? Answer: Two plus two is four. 2 + 2 = 4, 3 * 7 = 21, 10 / 4 = 2.5.
Question: Why is the sky blue? Answer: Because air scatters blue light more than red light.

Let me think about this step by step. First, we need to understand the problem. Then we can break it
into smaller parts, solve each part, and check the answer. If the answer is wrong, we go back and try
again. Thinking carefully before answering usually gives better results than answering quickly.

A server accepts requests from many clients at the same time. Each request has a prompt and a limit on
the number of tokens to generate. The scheduler groups the requests into batches, so that the model can
process them together. Continuous batching means that new requests join the batch as soon as there is
room, and finished requests leave it right away. The key and value cache stores what the model has
already computed, in blocks of sixty-four tokens, and blocks with the same prefix can be shared.

function add(a, b) {
  return a + b;
}
const numbers = [1, 2, 3, 4, 5];
const total = numbers.reduce((sum, x) => sum + x, 0);
console.log("The total is", total);
for (let i = 0; i < 10; i++) {
  if (i % 2 === 0) console.log(i, "is even");
  else console.log(i, "is odd");
}
def greet(name):
    return f"Hello, {name}!"
print(greet("world"))
import json
data = {"name": "seekd", "version": "0.1.0", "tokens": [0, 1, 2]}
print(json.dumps(data, indent=2))

The weather report for tomorrow: cloudy in the morning, sunny in the afternoon, with temperatures
between twelve and nineteen degrees. Winds from the west at ten kilometres per hour. Next week will be
warmer, with a chance of thunderstorms on Thursday and Friday. Monday, Tuesday, Wednesday, Thursday,
Friday, Saturday and Sunday. January, February, March, April, May, June, July, August, September,
October, November and December. Spring, summer, autumn and winter.

Cooking is simple when you follow a recipe. Take two eggs, a cup of flour, half a cup of milk and a
pinch of salt. Mix them well in a bowl, heat a pan with a little butter, and pour in the batter. Cook
each side for about a minute until it is golden. Serve with fruit, honey or chocolate. Enjoy your meal!

Mathematics is the study of numbers, shapes and patterns. A prime number has exactly two divisors: one
and itself. The first primes are 2, 3, 5, 7, 11, 13, 17, 19, 23 and 29. The area of a circle is pi
times the square of its radius, and pi is about 3.14159. A triangle has three sides and three angles
that add up to one hundred and eighty degrees. Algebra uses letters such as x and y for unknown values.

The library was quiet. Rows of shelves held thousands of books: novels and poems, atlases and
dictionaries, books about animals, plants, planets and people. A student sat by the window, reading
about the history of writing, from clay tablets to printed pages to the screens we use today. Writing
lets us share ideas across time and distance, and reading lets us learn from people we will never meet.

Please write a short poem about the ocean.
The ocean sings a quiet song,
of waves that roll the whole day long,
of shells and sand and silver light,
and moonlit tides that turn at night.

Can you help me with my homework? Of course. Tell me which subject, and show me the question. I will
explain the idea first, then give an example, and then you can try a similar problem on your own. Good
questions are the beginning of good answers. Do not worry about making mistakes; everyone learns by
trying, failing and trying again.

Thank you very much for your help. You are welcome! Have a nice day. Goodbye, and see you soon.
Yes, no, maybe, perhaps, certainly, probably, always, never, sometimes, often, usually, rarely.
I think that this is a good idea, but we should also consider the other options before we decide.
It is important to be kind, to listen carefully, and to tell the truth.

你好，世界。今天天气很好。我们一起学习吧。谢谢你的帮助。
こんにちは、世界。今日はいい天気ですね。ありがとうございます。
Bonjour le monde. Hola mundo. Hallo Welt. Ciao mondo. Olá mundo.
Emoji: 🙂 🚀 ✨ ❤️ 👍 🎉 — and symbols: © ® ™ € £ ¥ § ° ± × ÷ ≤ ≥ ≠ ∞ → ← ↑ ↓.
`;
