import { describe, expect, it } from 'vitest';
import { nearestRegion, regionMisfit } from '../../../workers/geo/regions.ts';

const place = (lat: number, lon: number) => ({ lat, lon });

describe('regions on the map', () => {
  it('finds the nearest region', () => {
    expect(nearestRegion(place(48.86, 2.35)).id).toBe('eu-west'); // Paris
    expect(nearestRegion(place(-33.87, 151.21)).id).toBe('ap-southeast-3'); // Sydney
    expect(nearestRegion(place(40.71, -74.01)).id).toBe('us-east'); // New York
  });

  it('lets a backend announce the region it is in, or one nearly as near', () => {
    expect(regionMisfit('eu-west', place(52.23, 21.01))).toBeUndefined(); // Warsaw, 890 km
    expect(regionMisfit('eu-west', place(38.72, -9.14))).toBeUndefined(); // Lisbon, 1870 km, still nearest
    expect(regionMisfit('ap-southeast', place(-6.21, 106.85))).toBeUndefined(); // Jakarta, 900 km from Singapore
    // Far from every region: one of the nearest fits (Sydney: Jakarta 5500 km, Singapore 6300 km).
    expect(regionMisfit('ap-southeast', place(-33.87, 151.21))).toBeUndefined();
  });

  it('refuses a claim that does not fit the region it names, and says which would', () => {
    expect(regionMisfit('eu-west', place(1.35, 103.82))).toMatchObject({ nearest: { id: 'ap-southeast' } }); // Singapore claiming Frankfurt
    const sydneyInVirginia = regionMisfit('us-east', place(-33.87, 151.21));
    expect(sydneyInVirginia?.nearest.id).toBe('ap-southeast-3');
    expect(sydneyInVirginia!.km).toBeGreaterThan(15_000);
  });
});
