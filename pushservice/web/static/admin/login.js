// The sign-in form: trade an admin token for the dashboard's HttpOnly cookie, then load
// the dashboard.

const form = document.getElementById('sign-in');
form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const result = form.elements.result;
  const token = form.elements.token.value.trim();
  result.textContent = '';
  const response = await fetch('session', {
    method: 'POST', credentials: 'same-origin', headers: {Authorization: `Bearer ${token}`},
  });
  if (response.ok) {
    window.location.reload();
    return;
  }
  let message = `HTTP ${response.status}`;
  try {
    const error = (await response.json()).error;
    message = error.code === 'admin_required'
      ? 'This token is valid but does not have the admin role.' : error.message;
  } catch { /* not JSON: keep the status */ }
  result.textContent = message;
});
