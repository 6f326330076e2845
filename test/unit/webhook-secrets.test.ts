import { describe, expect, it } from 'vitest';
import { thrown } from '../helpers/errors.js';
import { loadConfig } from '../../src/core/config.js';
import { publicError } from '../../src/core/errors.js';
import { resolveWebhookSecret } from '../../src/domain/callbacks.js';

const secret = (fill: string, bytes = 24): string => `whsec_${Buffer.alloc(bytes, fill).toString('base64')}`;

describe('tenant-scoped webhook secrets', () => {
  const config = loadConfig({
    SONIC_WEBHOOK_SECRET: secret('s'),
    SONIC_WEBHOOK_SECRETS: `acme/default=${secret('a')}, acme/billing=${secret('b')}, globex/billing=${secret('g')}, legacy=${secret('l')}`,
  });

  it('normalises entries to tenant/name (a bare name belongs to tenant default)', () => {
    expect(config.webhookSecrets.map((e) => e.slice(0, e.indexOf('=')))).toEqual(['acme/default', 'acme/billing', 'globex/billing', 'default/legacy']);
  });

  it('resolves a secret_ref within the tenant only', () => {
    expect(resolveWebhookSecret(config, 'acme', 'billing')).toBe(secret('b'));
    expect(resolveWebhookSecret(config, 'globex', 'billing')).toBe(secret('g'));
    expect(resolveWebhookSecret(config, 'default', 'legacy')).toBe(secret('l'));
    for (const [tenant, ref] of [
      ['globex', 'default'],
      ['acme', 'legacy'],
      ['acme', 'globex/billing'],
      ['acme', '../globex/billing'],
      ['globex', 'nope'],
      ['acme', 'billing=x'],
    ] as const) {
      const e = thrown(() => resolveWebhookSecret(config, tenant, ref));
      expect(e.code, `${tenant} ${ref}`).toBe('CALLBACK_SECRET_UNKNOWN');
      expect(e.retryable).toBe(false);
      const pub = publicError(e);
      expect(pub.message).toContain(JSON.stringify(ref));
      expect(pub.details).toEqual({ field: 'callback_secret_ref' });
      for (const s of ['a', 'b', 'g', 'l', 's']) expect(e.message).not.toContain(secret(s).slice(6));
    }
  });

  it('without a secret_ref, uses <tenant>/default, else the shared SONIC_WEBHOOK_SECRET, else refuses', () => {
    expect(resolveWebhookSecret(config, 'acme', null)).toBe(secret('a'));
    expect(resolveWebhookSecret(config, 'acme', '')).toBe(secret('a'));
    expect(resolveWebhookSecret(config, 'globex', null)).toBe(secret('s'));
    const bare = loadConfig({ SONIC_WEBHOOK_SECRETS: `acme/default=${secret('a')}` });
    expect(thrown(() => resolveWebhookSecret(bare, 'globex', null)).code).toBe('CALLBACK_SECRET_UNKNOWN');
  });

  it.each([
    ['acme/billing', /entry 1 must be tenant\/name=whsec_/],
    [`acme/bil ling=${secret('a')}`, /entry 1/],
    [`acme/=${secret('a')}`, /entry 1/],
    [`/billing=${secret('a')}`, /entry 1/],
    [`acme/a/b=${secret('a')}`, /entry 1/],
    [`acme/x=${secret('a')},acme/billing=whsec_short`, /the secret of acme\/billing must be whsec_/],
    [`acme/billing=${secret('a').slice(6)}`, /must be whsec_/],
    [`acme/billing=${secret('a', 65)}`, /24 to 64/],
    [`acme/billing=${secret('a')},acme/billing=${secret('b')}`, /names acme\/billing twice/],
  ])('refuses SONIC_WEBHOOK_SECRETS=%s at load, without echoing a secret', (raw, message) => {
    const e = thrown(() => loadConfig({ SONIC_WEBHOOK_SECRETS: raw }));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain(Buffer.alloc(24, 'a').toString('base64'));
  });

  it('checks SONIC_WEBHOOK_SECRET the same way', () => {
    expect(thrown(() => loadConfig({ SONIC_WEBHOOK_SECRET: 'hunter2' })).message).toMatch(/SONIC_WEBHOOK_SECRET: the secret must be whsec_/);
    expect(loadConfig({}).webhookSecret).toBe('');
  });
});
