import { describe, expect, it } from 'vitest';
import { thrown } from '../helpers/errors.js';
import { ERROR_CODES, publicError } from '../../src/core/errors.js';
import { checkCallbackUrl, isAllowListed, isPublicAddress, refusedRange } from '../../src/domain/callbacks.js';

describe('address policy (ipaddr.js ranges, an allow-list of global unicast)', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'linkLocal'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['0.0.0.0', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['224.0.0.1', 'multicast'],
    ['192.0.2.1', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['::ffff:127.0.0.1', 'ipv4Mapped'],
    ['::ffff:8.8.8.8', 'ipv4Mapped'],
    ['::ffff:0:8.8.8.8', 'rfc6145'],
    ['64:ff9b::7f00:1', 'rfc6052'],
    ['64:ff9b:1::a00:1', 'rfc6052'],
    ['2002:7f00:1::', '6to4'],
    ['2001:0:4136:e378::1', 'teredo'],
    ['::7f00:1', 'non-global'],
    // ipaddr.js reads the deprecated IPv4-compatible `::a.b.c.d` as IPv4-mapped: refused either way
    ['::127.0.0.1', 'ipv4Mapped'],
    ['fec0::1', 'deprecatedSiteLocal'],
    ['fc00::1', 'uniqueLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['fe80::1', 'linkLocal'],
    ['fe80::1%eth0', 'linkLocal'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['2001:2::1', 'benchmarking'],
    ['100::1', 'discard'],
    ['3fff::1', 'reserved'],
    ['e000::1', 'non-global'],
    ['4000::1', 'non-global'],
    ['not-an-ip', 'invalid'],
  ])('refuses %s (%s)', (address, range) => {
    expect(refusedRange(address)).toBe(range);
    expect(isPublicAddress(address)).toBe(false);
  });

  it.each(['93.184.216.34', '8.8.8.8', '1.1.1.1', '2606:4700::1111', '2a00:1450:4001:80b::200e', '[2606:4700::1111]'])(
    'accepts the public address %s',
    (address) => {
      expect(refusedRange(address)).toBeNull();
    },
  );

  it('matches allow-listed hosts by name (case, final dot) and by IPv6 value, not by spelling', () => {
    expect(isAllowListed('LocalHost.', ['localhost'])).toBe(true);
    expect(isAllowListed('[::1]', ['0:0:0:0:0:0:0:1'])).toBe(true);
    expect(isAllowListed('[::7f00:1]', ['::127.0.0.1'])).toBe(true);
    expect(isAllowListed('[::ffff:7f00:1]', ['::127.0.0.1'])).toBe(false);
    expect(isAllowListed('127.0.0.1', ['localhost'])).toBe(false);
    expect(isAllowListed('evil.localhost', ['localhost'])).toBe(false);
  });
});

describe('checkCallbackUrl (submit time, no DNS)', () => {
  it.each([
    ['ftp://example.com/hook', /http\(s\)/],
    ['javascript:alert(1)', /http\(s\)/],
    ['file:///etc/passwd', /http\(s\)/],
    ['not a url', /not a valid absolute URL/],
    ['https://user:pass@example.com/hook', /credentials/],
    ['https://token@example.com/hook', /credentials/],
    ['https://example.com:0/hook', /port 0/],
    [`https://example.com/${'a'.repeat(2100)}`, /longer than 2048/],
    ['http://2130706433/', /range loopback/],
    ['http://0x7f000001/', /range loopback/],
    ['http://0177.0.0.1/', /range loopback/],
    ['http://127.1/', /range loopback/],
    ['http://0x7f.1/', /range loopback/],
    ['http://127.0.0.1./', /range loopback/],
    ['http://%31%32%37.0.0.1/', /range loopback/],
    ['http://0/', /range unspecified/],
    ['http://0.0.0.0:8080/', /range unspecified/],
    ['http://169.254.169.254/latest/meta-data/', /range linkLocal/],
    ['http://100.64.0.1/', /range carrierGradeNat/],
    ['http://255.255.255.255/', /range broadcast/],
    ['http://224.0.0.1/', /range multicast/],
    ['http://10.0.0.1/', /range private/],
    ['http://[::1]/', /range loopback/],
    ['http://[::ffff:127.0.0.1]/', /range ipv4Mapped/],
    ['http://[::ffff:7f00:1]/', /range ipv4Mapped/],
    ['http://[0:0:0:0:0:ffff:169.254.169.254]/', /range ipv4Mapped/],
    ['http://[64:ff9b::7f00:1]/', /range rfc6052/],
    ['http://[2002:7f00:1::]/', /range 6to4/],
    ['http://[::127.0.0.1]/', /range non-global/],
    ['http://[fec0::1]/', /range deprecatedSiteLocal/],
    ['http://[fe80::1%25eth0]/', /not a valid absolute URL/],
    ['http://[fe80::1]/', /range linkLocal/],
    ['http://[fc00::1]/', /range uniqueLocal/],
    ['http://[2001:db8::1]/', /range reserved/],
    ['http://localhost/', /localhost/],
    ['http://LOCALHOST:8080/', /localhost/],
    ['http://localhost./', /localhost/],
    ['http://api.localhost/', /localhost/],
    ['http://deep.api.localhost./', /localhost/],
    ['http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/', /localhost/],
  ])('refuses %s', (url, message) => {
    const e = thrown(() => checkCallbackUrl(url, []));
    expect(e.code).toBe('CALLBACK_URL_REFUSED');
    expect(e.retryable).toBe(false);
    const pub = publicError(e);
    expect(pub.message).toMatch(message);
    expect(pub.message).not.toBe(ERROR_CODES.CALLBACK_URL_REFUSED.doc);
    expect(pub.details).toEqual({ field: 'callback_url' });
  });

  it.each([
    'https://hooks.example.com/sonic',
    'http://93.184.216.34:8080/hook',
    'https://[2606:4700::1111]/hook',
    'https://hooks.example.com:8443/a?b=c#frag',
    // names are checked by address when the delivery connects, not here
    'https://internal.corp.example/hook',
    'https://localhost.example.com/hook',
    'https://mylocalhost/hook',
  ])('accepts %s', (url) => {
    expect(() => checkCallbackUrl(url, [])).not.toThrow();
  });

  it('lets allow-listed hosts through the address and localhost checks, never through scheme or credentials', () => {
    expect(() => checkCallbackUrl('http://127.0.0.1:9999/hook', ['127.0.0.1'])).not.toThrow();
    expect(() => checkCallbackUrl('http://localhost:9999/hook', ['localhost'])).not.toThrow();
    expect(() => checkCallbackUrl('http://[::1]:9999/hook', ['::1'])).not.toThrow();
    // 127.1 is 127.0.0.1 for the URL parser, so it matches the listed literal
    expect(() => checkCallbackUrl('http://127.1:9999/hook', ['127.0.0.1'])).not.toThrow();
    expect(thrown(() => checkCallbackUrl('http://u:p@127.0.0.1/hook', ['127.0.0.1'])).code).toBe('CALLBACK_URL_REFUSED');
    expect(thrown(() => checkCallbackUrl('http://127.0.0.2/hook', ['127.0.0.1'])).code).toBe('CALLBACK_URL_REFUSED');
  });
});
