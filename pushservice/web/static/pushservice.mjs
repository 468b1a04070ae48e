/*
 * pushservice.mjs: the browser client of pushservice as an ES module.
 *
 *   import PushService from 'https://push.example.com/static/pushservice.mjs';
 *   import {connect} from 'https://push.example.com/static/pushservice.mjs';
 *
 * It runs pushservice.js (one implementation for both ways of loading it) and exports
 * what that defines. A module has no document.currentScript, so the service it came from
 * (the default `url`) is taken from this module's own address.
 */
import './pushservice.js';

const PushService = globalThis.PushService;
if (!PushService.defaultUrl) {
  PushService.defaultUrl = new URL('..', import.meta.url).href.replace(/\/+$/, '');
}

export default PushService;
export {PushService};
export const {connect, PushClient, CONNECTING, OPEN, CLOSED, MESSAGE_TYPES} = PushService;
