import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOutputParser, parseToolCalls } from './chat-output.ts';

function run(p: ChatOutputParser, pieces: string[]) {
  let reasoning = '', content = '';
  for (const x of pieces) { const d = p.push(x); reasoning += d.reasoning; content += d.content; }
  const f = p.finish();
  return { reasoning: reasoning + f.reasoning, content: content + f.content, toolCalls: f.toolCalls };
}

const chars = (s: string) => Array.from(s);

test('prompt opened <think>: text until </think> is reasoning, even when the tag straddles deltas', () => {
  const r = run(new ChatOutputParser({ reasoning: true, thinking: true, tools: false }), ['Let me th', 'ink.</th', 'ink>\n\nThe answer', ' is 4.']);
  assert.deepEqual(r, { reasoning: 'Let me think.', content: '\n\nThe answer is 4.', toolCalls: [] });
  assert.deepEqual(run(new ChatOutputParser({ reasoning: true, thinking: true, tools: false }), chars('a</think>b')), { reasoning: 'a', content: 'b', toolCalls: [] });
});

test('no end tag: everything so far is reasoning; content empty after </think>', () => {
  const p = new ChatOutputParser({ reasoning: true, thinking: true, tools: false });
  assert.deepEqual(p.push('still thinking </thi'), { reasoning: 'still thinking ', content: '' });
  assert.deepEqual(p.finish(), { reasoning: '</thi', content: '', toolCalls: [] });
  assert.deepEqual(run(new ChatOutputParser({ reasoning: true, thinking: true, tools: false }), ['x</think>']), { reasoning: 'x', content: '', toolCalls: [] });
});

test('output that starts with <think> is reasoning; otherwise it is content', () => {
  assert.deepEqual(run(new ChatOutputParser({ reasoning: true, thinking: false, tools: false }), ['\n<thi', 'nk>hmm</think>ok']), { reasoning: 'hmm', content: 'ok', toolCalls: [] });
  assert.deepEqual(run(new ChatOutputParser({ reasoning: true, thinking: false, tools: false }), ['<t', 'able>']), { reasoning: '', content: '<table>', toolCalls: [] });
  assert.deepEqual(run(new ChatOutputParser({ reasoning: false, thinking: false, tools: false }), ['<think>x</think>']), { reasoning: '', content: '<think>x</think>', toolCalls: [] });
});

test('V3 tool calls after reasoning, one and two calls', () => {
  const one = 'r</think>Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>';
  assert.deepEqual(run(new ChatOutputParser({ reasoning: true, thinking: true, tools: true }), chars(one)), {
    reasoning: 'r', content: 'Sure.', toolCalls: [{ name: 'get_weather', arguments: '{"city": "Paris"}' }],
  });
  const two = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n[1]\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>';
  assert.deepEqual(parseToolCalls(two), [{ name: 'a', arguments: '{}' }, { name: 'b', arguments: '[1]' }]);
  assert.deepEqual(parseToolCalls('<｜tool▁call▁begin｜>f<｜tool▁sep｜>{"x":1}<｜tool▁call▁end｜>'), [{ name: 'f', arguments: '{"x":1}' }]);
  // Broken JSON: not a tool call; the text comes back as content.
  const bad = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{oops\n```<｜tool▁call▁end｜>';
  assert.deepEqual(run(new ChatOutputParser({ reasoning: false, thinking: false, tools: true }), [bad]), { reasoning: '', content: bad, toolCalls: [] });
});
