// login.js — the login page: the token goes to POST /login once; the session lives in an
// HttpOnly cookie, so nothing secret stays in the page or in storage.
const form = document.getElementById('login');
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const error = document.getElementById('error');
  error.textContent = '';
  const r = await fetch('/login', {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({token: document.getElementById('token').value.trim()}),
  });
  if (r.ok) {
    location.href = '/';
    return;
  }
  const body = await r.json().catch(() => ({}));
  error.textContent = body.message || `login failed (${r.status})`;
});
