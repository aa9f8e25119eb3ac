// seekd chat page: plain JS, no build step. Streams /v1/chat/completions (SSE), shows reasoning in a
// collapsible block, stops a generation with the Stop button (aborting the request frees its KV cache).
'use strict';
const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;

const keyInput = $('apikey');
keyInput.value = localStorage.getItem('seekd.apiKey') || '';
keyInput.addEventListener('change', () => { localStorage.setItem('seekd.apiKey', keyInput.value); loadModels(); });

function headers() {
  const h = { 'content-type': 'application/json' };
  if (keyInput.value) h.authorization = 'Bearer ' + keyInput.value;
  return h;
}

function status(text) { $('status').textContent = text; }

async function loadModels() {
  try {
    const r = await fetch('/v1/models', { headers: headers() });
    const j = await r.json();
    if (!r.ok) throw new Error(j.error ? j.error.message : r.statusText);
    const sel = $('model');
    sel.innerHTML = '';
    for (const m of j.data) {
      const o = document.createElement('option');
      o.value = o.textContent = m.id;
      sel.appendChild(o);
    }
    status('Ready.');
  } catch (e) {
    status('Could not list models: ' + e.message);
  }
}

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.textContent = text;
  $('log').appendChild(div);
  div.scrollIntoView({ block: 'end' });
  return div;
}

function assistantBubble() {
  const div = addMessage('assistant', '');
  const details = document.createElement('details');
  details.className = 'reasoning';
  details.hidden = true;
  details.open = true;
  const summary = document.createElement('summary');
  summary.textContent = 'Reasoning';
  const reasoning = document.createElement('div');
  details.append(summary, reasoning);
  const content = document.createElement('div');
  content.className = 'content';
  div.append(details, content);
  return { div, details, reasoning, content };
}

async function send(text) {
  history.push({ role: 'user', content: text });
  addMessage('user', text);
  const b = assistantBubble();
  controller = new AbortController();
  $('send').disabled = true;
  $('stop').disabled = false;
  status('Generating…');
  let answer = '';
  const t0 = performance.now();
  let tokens = 0;
  try {
    const r = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers(), signal: controller.signal,
      body: JSON.stringify({
        model: $('model').value, messages: history, stream: true, stream_options: { include_usage: true },
        chat_template_kwargs: { thinking: $('thinking').checked },
        ...($('maxtokens').value ? { max_tokens: Number($('maxtokens').value) } : {}),
      }),
    });
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      throw new Error(j.error ? j.error.message : r.status + ' ' + r.statusText);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!event.startsWith('data: ')) continue; // keep-alive comments
        const data = event.slice(6);
        if (data === '[DONE]') continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        if (j.usage) tokens = j.usage.completion_tokens;
        for (const c of j.choices) {
          if (c.delta.reasoning_content) {
            b.details.hidden = false;
            b.reasoning.textContent += c.delta.reasoning_content;
          }
          if (c.delta.content) {
            answer += c.delta.content;
            b.content.textContent = answer;
            if (!b.details.hidden) b.details.open = false;
          }
        }
        b.div.scrollIntoView({ block: 'end' });
      }
    }
    const s = (performance.now() - t0) / 1000;
    status(`Done: ${tokens} tokens in ${s.toFixed(1)} s (${(tokens / s).toFixed(1)} tokens/s).`);
  } catch (e) {
    if (e.name === 'AbortError') status('Stopped.');
    else { b.div.classList.add('error'); b.content.textContent = answer + (answer ? '\n' : '') + 'Error: ' + e.message; status('Error.'); }
  } finally {
    history.push({ role: 'assistant', content: answer });
    controller = null;
    $('send').disabled = false;
    $('stop').disabled = true;
  }
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('input').value.trim();
  if (!text || controller) return;
  $('input').value = '';
  send(text);
});
$('input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); }
});
$('stop').addEventListener('click', () => { if (controller) controller.abort(); });
$('clear').addEventListener('click', () => { history.length = 0; $('log').innerHTML = ''; status('New chat.'); });
loadModels();
