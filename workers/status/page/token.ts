/**
 * The token the page reads the status with, kept in this tab only
 * (`sessionStorage`: gone when the tab closes, never shared with other tabs,
 * never a cookie). Storage that is blocked just means the token lives in
 * memory until the page reloads.
 */

const KEY = 'mesh-status-token';
let memory: string | undefined;

export function readToken(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) ?? memory;
  } catch {
    return memory;
  }
}

export function keepToken(token: string): void {
  memory = token;
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // Blocked storage: memory only.
  }
}

export function forgetToken(): void {
  memory = undefined;
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // Nothing was kept.
  }
}
