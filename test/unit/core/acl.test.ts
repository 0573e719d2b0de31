/** Role permissions: allow filters, deny filters checked first over all of a principal's roles. */
import { expect } from 'chai';
import { AccessControl, Permissions } from '../../../src/core/acl.js';

describe('acl (one permission check for every door)', () => {
  const acl = new AccessControl(new Map([
    ['operator', { read: ['acme/#'], write: ['acme/plant1/#'] }],
    ['no-hr', { read: ['acme/#'], write: ['acme/#'], deny: { read: ['acme/+/hr/#'], write: ['acme/+/+/+/+/setpoint'] } }],
    ['admin', { read: ['#'], write: ['#'] }],
  ]));

  it('allows a publish matched by a write filter and a subscription covered by a read filter', () => {
    const p = acl.forRoles(['operator']);
    expect(p.canWrite('acme/plant1/packaging/line1/filler/temperature')).to.equal(true);
    expect(p.canWrite('acme/plant2/packaging/line1/filler/temperature')).to.equal(false);
    expect(p.canSubscribe('acme/plant1/#')).to.equal(true);
    expect(p.canSubscribe('#'), 'must lie wholly inside a read filter').to.equal(false);
    expect(p.hasReadDenies).to.equal(false);
  });

  it('checks deny rules first, whatever another role of the principal allows', () => {
    const p = acl.forRoles(['admin', 'no-hr']);
    expect(p.canRead('acme/plant1/hr/payroll')).to.equal(false);
    expect(p.canRead('acme/plant1/packaging/line1/filler/temperature')).to.equal(true);
    expect(p.canWrite('acme/plant1/packaging/line1/filler/setpoint')).to.equal(false);
    expect(p.canWrite('acme/plant1/packaging/line1/filler/temperature')).to.equal(true);
  });

  it('refuses a subscription wholly inside a deny filter; grants one that overlaps it, flagged for per-delivery checks', () => {
    const p = acl.forRoles(['no-hr']);
    expect(p.canSubscribe('acme/plant1/hr/#')).to.equal(false);
    expect(p.canSubscribe('acme/#')).to.equal(true);
    expect(p.hasReadDenies).to.equal(true);
    expect(p.needsDeliveryCheck('acme/#')).to.equal(true);
    expect(p.needsDeliveryCheck('acme/plant1/packaging/#')).to.equal(false);
  });

  it('gives one Permissions object per set of roles, in any order', () => {
    expect(acl.forRoles(['admin', 'no-hr'])).to.equal(acl.forRoles(['no-hr', 'admin']));
    expect(new Permissions([], []).canRead('acme/x')).to.equal(false);
  });
});
