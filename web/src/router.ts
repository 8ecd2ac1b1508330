// Routes are the URLs the issue names. Admin pages, the terminal and the
// replay player are separate chunks so the slot list loads fast.
import { createRouter, createWebHistory, type RouteRecordRaw } from "vue-router";
import MySlots from "./pages/MySlots.vue";

const routes: RouteRecordRaw[] = [
  { path: "/", name: "slots", component: MySlots, meta: { title: "My slots" } },
  {
    path: "/slot/:id/",
    alias: "/slot/:id",
    name: "terminal",
    component: () => import("./pages/Terminal.vue"),
    meta: { bare: true, title: "Terminal" },
  },
  { path: "/admin", redirect: "/admin/slots" },
  { path: "/admin/slots", name: "admin-slots", component: () => import("./pages/admin/AdminSlots.vue"), meta: { admin: true, title: "Slots" } },
  { path: "/admin/users", name: "admin-users", component: () => import("./pages/admin/AdminUsers.vue"), meta: { admin: true, title: "Users" } },
  { path: "/admin/stats", name: "admin-stats", component: () => import("./pages/admin/AdminStats.vue"), meta: { admin: true, title: "Stats" } },
  { path: "/admin/logs", name: "admin-logs", component: () => import("./pages/admin/AdminLogs.vue"), meta: { admin: true, title: "Access log" } },
  {
    path: "/admin/recordings",
    name: "admin-recordings",
    component: () => import("./pages/admin/AdminRecordings.vue"),
    meta: { admin: true, title: "Recordings" },
  },
  {
    path: "/replay/:token",
    name: "replay",
    component: () => import("./pages/Replay.vue"),
    meta: { bare: true, public: true, title: "Replay" },
  },
  { path: "/:rest(.*)*", name: "not-found", component: () => import("./pages/NotFound.vue"), meta: { title: "Not found" } },
];

export const router = createRouter({
  history: createWebHistory("/"),
  routes,
  scrollBehavior: () => ({ top: 0 }),
});

router.afterEach((to) => {
  const t = typeof to.meta.title === "string" ? to.meta.title : "";
  const id = typeof to.params.id === "string" ? to.params.id : "";
  document.title = id ? `${id} · slotgate` : t ? `${t} · slotgate` : "slotgate";
});
